"""The committed protobuf/gRPC modules are what the .proto file generates today."""

import shutil
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[2]
GENERATED = ["teacher_service_pb2.py", "teacher_service_pb2_grpc.py", "teacher_service_pb2.pyi"]


def test_generated_code_matches_the_proto(tmp_path):
    (tmp_path / "teachers" / "proto").mkdir(parents=True)
    shutil.copy(REPO / "teachers" / "proto" / "teacher_service.proto", tmp_path / "teachers" / "proto")
    args = ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}", str(tmp_path / "teachers" / "proto" / "teacher_service.proto")]
    assert protoc.main(args) == 0
    for name in GENERATED:
        fresh = (tmp_path / "teachers" / "proto" / name).read_text()
        assert fresh == (REPO / "teachers" / "proto" / name).read_text(), (
            f"teachers/proto/{name} is out of date: regenerate with python -m grpc_tools.protoc -I. "
            "--python_out=. --grpc_python_out=. --pyi_out=. teachers/proto/teacher_service.proto")
