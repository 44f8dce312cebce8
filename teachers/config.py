"""The teachers' sections of a run config: each teacher (`teachers:`) and Serve's proxies (`serve:`)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from cluster import DTYPES, ModelSpec, ResourcesConfig, Strict, check_name
from teachers.request_batching import RequestBatchingConfig


class TeacherTrainingConfig(Strict):
    """How a teacher without a weights file is trained (the result is cached)."""

    epochs: int = Field(60, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = 0


class TeacherConfig(Strict):
    """One teacher: a model, where its weights come from, its weight in the mix, its resources."""

    name: str
    model: ModelSpec
    weights: Optional[str] = Field(None, description="safetensors file; omitted: train and cache")
    pretrained: bool = Field(False, description="the factory loads pretrained weights itself (models.hf): "
                                                "no training and no weights file")
    training: TeacherTrainingConfig = Field(default_factory=TeacherTrainingConfig)
    weight: float = Field(1.0, gt=0)
    dtype: Optional[Literal[DTYPES]] = Field(
        None, description="what the teacher answers in (its replicas, precompute, `teacher serve`); omitted: bfloat16 "
                          "where it is given GPUs (resources.num_gpus; set float16 on GPUs without bfloat16), "
                          "float32 on CPUs; float16 needs a GPU")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    batching: RequestBatchingConfig = Field(default_factory=RequestBatchingConfig)

    _name = field_validator("name")(check_name)

    @model_validator(mode="after")
    def _one_weight_source(self) -> "TeacherConfig":
        if self.pretrained and self.weights:
            raise ValueError("weights: a pretrained teacher loads its own weights; drop weights or pretrained")
        if self.dtype is None:  # decided from what the teacher is given, as its device is (cluster.devices)
            self.dtype = "bfloat16" if self.resources.num_gpus > 0 else "float32"
        return self


class ServeConfig(Strict):
    """Serve's HTTP proxy and the run's gRPC ingress (`teachers.ingress`). `grpc_port` turns the
    ingress (TeacherService, on the driver's node) on; it listens on `grpc_host` only, 127.0.0.1
    unless you name another interface, where it needs TLS; every call carries the bearer token
    in `grpc_token_file`. Teachers never get an HTTP route, whatever started Serve."""

    proxy: Literal["disabled", "head"] = "disabled"
    grpc_port: Optional[int] = Field(None, ge=1, le=65535, description="the run's gRPC ingress port; off if omitted")
    grpc_host: str = Field("127.0.0.1", description="the one interface the ingress listens on")
    grpc_token_file: Optional[str] = Field(None, description="file holding the ingress bearer token")
    grpc_tls_cert_file: Optional[str] = Field(None, description="PEM certificate chain of the ingress (TLS)")
    grpc_tls_key_file: Optional[str] = Field(None, description="PEM private key of that certificate")
    grpc_tls_client_ca_file: Optional[str] = Field(None, description="PEM CA that client certificates must chain to "
                                                                      "(asks for them when set)")

    @model_validator(mode="after")
    def _ingress_is_protected(self) -> "ServeConfig":
        from teachers.grpc_service import is_loopback

        if self.grpc_port is None:
            return self
        if not self.grpc_token_file:
            raise ValueError("grpc_token_file is required when grpc_port is set: the gRPC ingress accepts only "
                             "calls that carry its bearer token")
        if bool(self.grpc_tls_cert_file) != bool(self.grpc_tls_key_file):
            raise ValueError("grpc_tls_cert_file and grpc_tls_key_file go together: give both for TLS")
        if self.grpc_tls_client_ca_file and not self.grpc_tls_cert_file:
            raise ValueError("grpc_tls_client_ca_file asks for client certificates over TLS: give grpc_tls_cert_file "
                             "and grpc_tls_key_file too")
        if not self.grpc_tls_cert_file and not is_loopback(self.grpc_host):
            raise ValueError(f"grpc_host {self.grpc_host!r} is not loopback: plaintext gRPC is only allowed on "
                             f"loopback; give grpc_tls_cert_file and grpc_tls_key_file, or put a TLS-terminating "
                             f"proxy on that interface in front of an ingress on 127.0.0.1")
        return self


def check_teachers(cfg: Any) -> None:
    """Teacher names are unique in a run."""
    names = [t.name for t in cfg.teachers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"teachers: names must be unique, repeated: {duplicates}")
