"""Self-signed certificates for loopback endpoints (tests and benchmarks).

A production endpoint uses certificates from the cluster's own CA; this writes a throwaway CA,
a server certificate for 127.0.0.1/localhost and a client certificate, PEM encoded.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool, sans=()):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=7))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_self_signed(folder: str | Path) -> TlsFiles:
    """Write a CA, a loopback server certificate and a client certificate into `folder`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("distillery-test-ca", ca_key, "distillery-test-ca", ca_key, ca=True)
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server_key, client_key = _key(), _key()
    server = _cert("localhost", server_key, "distillery-test-ca", ca_key, ca=False, sans=sans)
    client = _cert("distillery-student", client_key, "distillery-test-ca", ca_key, ca=False)
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem",
                     folder / "client.key")

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    for path, data in [(files.ca_cert, ca.public_bytes(serialization.Encoding.PEM)),
                       (files.server_cert, server.public_bytes(serialization.Encoding.PEM)),
                       (files.server_key, key_pem(server_key)),
                       (files.client_cert, client.public_bytes(serialization.Encoding.PEM)),
                       (files.client_key, key_pem(client_key))]:
        path.write_bytes(data)
        if path.suffix == ".key":
            path.chmod(0o600)
    return files
