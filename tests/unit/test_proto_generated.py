"""The committed protobuf/gRPC modules are what the .proto file generates today.

The generator's own release is stamped into the output (`GRPC_GENERATED_VERSION`, the protobuf
gencode version); any release that pyproject allows may be installed, so those stamps are
compared apart from the rest: every other line, the serialized descriptor included, must match.
"""

import re
import shutil
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[2]
GENERATED = ["teacher_service_pb2.py", "teacher_service_pb2_grpc.py", "teacher_service_pb2.pyi"]
RELEASE_STAMPS = [
    (re.compile(r"^GRPC_GENERATED_VERSION = '[0-9.]+'$", re.M), "GRPC_GENERATED_VERSION = <release>"),
    (re.compile(r"^# Protobuf Python Version: \S+$", re.M), "# Protobuf Python Version: <release>"),
    (re.compile(r"(ValidateProtobufRuntimeVersion\(\n\s+_runtime_version\.Domain\.PUBLIC,\n)"
                r"\s+\d+,\n\s+\d+,\n\s+\d+,\n\s+'[^']*',\n"), r"\1    <release>\n"),
]


def without_release_stamps(code: str) -> str:
    for pattern, placeholder in RELEASE_STAMPS:
        code = pattern.sub(placeholder, code)
    return code


def test_release_stamps_are_found_and_only_they_are_masked():
    committed = (REPO / "teachers" / "proto" / "teacher_service_pb2.py").read_text()
    masked = without_release_stamps(committed)
    assert masked.count("<release>") == 2
    assert "AddSerializedFile" in masked
    grpc_code = (REPO / "teachers" / "proto" / "teacher_service_pb2_grpc.py").read_text()
    assert without_release_stamps(grpc_code).count("<release>") == 1
    changed = committed.replace("distillery.teachers.v1.DescribeRequest", "distillery.teachers.v1.Other")
    assert without_release_stamps(changed) != masked


def test_generated_code_matches_the_proto(tmp_path):
    (tmp_path / "teachers" / "proto").mkdir(parents=True)
    shutil.copy(REPO / "teachers" / "proto" / "teacher_service.proto", tmp_path / "teachers" / "proto")
    args = ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}", str(tmp_path / "teachers" / "proto" / "teacher_service.proto")]
    assert protoc.main(args) == 0
    for name in GENERATED:
        fresh = without_release_stamps((tmp_path / "teachers" / "proto" / name).read_text())
        assert fresh == without_release_stamps((REPO / "teachers" / "proto" / name).read_text()), (
            f"teachers/proto/{name} is out of date: regenerate with python -m grpc_tools.protoc -I. "
            "--python_out=. --grpc_python_out=. --pyi_out=. teachers/proto/teacher_service.proto")
