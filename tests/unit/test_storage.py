"""Run folders on object storage, against moto's S3-compatible server on loopback."""

import pytest

from cluster import RunFolder, join_uri, local_folder_for
from cluster.paths import paths_outside_roots


def test_uris_keep_their_options_when_joined():
    assert join_uri("s3://b/runs?endpoint_override=h:1&scheme=http", "r", "/train") == \
        "s3://b/runs/r/train?endpoint_override=h:1&scheme=http"
    assert join_uri("gs://b/", "x") == "gs://b/x"


def test_a_run_folder_on_s3_pulls_and_pushes_its_files_but_not_the_checkpoints(s3_server, tmp_path):
    s3, options = s3_server
    output = f"s3://runs-data/exp?{options}"
    first = RunFolder(output, "r1", str(tmp_path / "cache-a"))
    assert first.location == f"s3://runs-data/exp/r1?{options}" and first.pull() == 0
    (first.local / "state.json").write_text("{}")
    (first.local / "report").mkdir()
    (first.local / "report" / "loss.png").write_bytes(b"png")
    (first.local / "train").mkdir()
    (first.local / "train" / "big.pt").write_bytes(b"x")  # Ray Train writes its own; never mirrored
    first.push()
    assert s3.get_file_info("runs-data/exp/r1/report/loss.png").size == 3
    assert s3.get_file_info("runs-data/exp/r1/train/big.pt").type.name == "NotFound"

    (first.local / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "lo')  # pushed mid-write
    first.push()
    elsewhere = RunFolder(output, "r1", str(tmp_path / "cache-b"))  # a new driver on another machine
    assert elsewhere.pull() == 3
    assert (elsewhere.local / "metrics.jsonl").read_text() == '{"step": 1}\n'  # its next record starts a line
    assert (elsewhere.local / "report" / "loss.png").read_bytes() == b"png"
    storage = elsewhere.train_storage()
    assert storage["storage_path"] == "runs-data/exp/r1/train" and storage["storage_filesystem"].type_name == "s3"
    assert elsewhere.child("students", "kd") == f"s3://runs-data/exp/r1/students/kd?{options}"

    with local_folder_for(elsewhere.child("students", "kd")) as folder:
        (folder / "model.safetensors").write_bytes(b"weights")
    assert s3.get_file_info("runs-data/exp/r1/students/kd/model.safetensors").size == 7


def test_a_local_run_folder_stays_where_it_was():
    folder = RunFolder("runs", "r1", "/nowhere")
    assert folder.remote is None and folder.local.name == "r1" and folder.child("train").endswith("runs/r1/train")
    assert folder.train_storage() == {"storage_path": str(folder.local / "train")}


def test_a_uri_pyarrow_cannot_open_is_refused_saying_what_works():
    with pytest.raises(ValueError, match="pyarrow cannot open it.*s3://bucket/prefix"):
        RunFolder("nosuch://bucket/x", "r1", "/tmp")


def test_uris_in_a_config_file_need_an_allowed_prefix(monkeypatch):
    data = {"run": {"output_dir": "s3://team-bucket/runs"}}
    monkeypatch.delenv("DISTILLERY_ALLOWED_URIS", raising=False)
    assert "DISTILLERY_ALLOWED_URIS" in paths_outside_roots(data)[0]
    monkeypatch.setenv("DISTILLERY_ALLOWED_URIS", "s3://team-bucket/ gs://other/")
    assert paths_outside_roots(data) == []
    assert paths_outside_roots(data, skip=frozenset({"run.output_dir"}), roots=[]) == []
