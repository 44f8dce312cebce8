"""Run folders on object storage, against moto's S3-compatible server on loopback."""

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

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
    (first.local / "replay").mkdir()
    (first.local / "replay" / "manifest.json").write_text("{}")  # replay stores go to the URI directly
    first.push()
    assert s3.get_file_info("runs-data/exp/r1/report/loss.png").size == 3
    assert s3.get_file_info("runs-data/exp/r1/train/big.pt").type.name == "NotFound"
    assert s3.get_file_info("runs-data/exp/r1/replay/manifest.json").type.name == "NotFound"

    s3.delete_file("runs-data/exp/r1/state.json")
    (first.local / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "lo')  # pushed mid-write
    first.push()  # only what changed since the last push goes up
    assert s3.get_file_info("runs-data/exp/r1/state.json").type.name == "NotFound"
    (first.local / "state.json").write_text('{"phases": {}}')
    first.push()
    elsewhere = RunFolder(output, "r1", str(tmp_path / "cache-b"))  # a new driver on another machine
    assert elsewhere.pull() == 3
    assert (elsewhere.local / "metrics.jsonl").read_text() == '{"step": 1}\n'  # its next record starts a line
    assert (elsewhere.local / "state.json").read_text() == '{"phases": {}}'
    assert (elsewhere.local / "report" / "loss.png").read_bytes() == b"png"
    s3.delete_file("runs-data/exp/r1/report/loss.png")
    elsewhere.push()  # what was pulled is not sent back; the metrics cut at their last full line are
    assert s3.get_file_info("runs-data/exp/r1/report/loss.png").type.name == "NotFound"
    with s3.open_input_stream("runs-data/exp/r1/metrics.jsonl") as stream:
        assert stream.read() == b'{"step": 1}\n'
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


def test_teachers_cached_on_s3_are_trained_once_and_loaded_by_uri(s3_server, tmp_path, monkeypatch):
    """`DISTILLERY_TEACHER_CACHE=s3://...`: the weights and their info go to the store; a second
    run finds them there; a replica given the URI downloads the file once and serves the same
    version as from a local copy."""
    from cluster import ModelSpec, fetch_file, teacher_cache_dir
    from ingest.config import DataConfig
    from ingest.loading import load_dataset
    from models import file_version
    from orchestration.teacher_training import cached_teacher, train_or_load_teacher
    from teachers import TeacherTrainingConfig, resolve_model
    from teachers.loaded import LoadedTeacher, TeacherAppArgs

    s3, options = s3_server
    monkeypatch.setenv("DISTILLERY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DISTILLERY_TEACHER_CACHE", f"s3://runs-data/teachers?{options}")
    data = DataConfig()
    dataset = load_dataset(data)
    model = resolve_model(ModelSpec(factory="models.zoo:mlp", kwargs={"hidden": [16]}),
                          in_features=dataset.in_features, num_classes=dataset.num_classes,
                          allowed_modules=["models.zoo"])
    training = TeacherTrainingConfig(epochs=1)
    trained = train_or_load_teacher("mlp", model, training, data, dataset, teacher_cache_dir())
    assert trained.weights_path.startswith("s3://runs-data/teachers/mlp-") and not trained.cached
    stored = [i.path for i in s3.get_file_info(_all("runs-data/teachers"))]
    assert sorted(p.rsplit(".", 1)[1] for p in stored) == ["json", "safetensors"]
    again = cached_teacher("mlp", model, training, data, dataset, teacher_cache_dir())
    assert again.cached and again.weights_path == trained.weights_path and again.test_score == trained.test_score

    local = fetch_file(trained.weights_path)
    first_fetch = Path(local).stat().st_ino  # a download writes a new file (a use only marks its time)
    args = TeacherAppArgs(name="mlp", factory=model.factory, kwargs=model.kwargs, allowed_modules=["models.zoo"],
                          weights_path=trained.weights_path, in_features=dataset.in_features, temperature=1.0)
    served = LoadedTeacher.load(args)
    assert served.version == file_version(local) and Path(local).stat().st_ino == first_fetch  # fetched once


def _all(path):
    from pyarrow import fs

    return fs.FileSelector(path, recursive=True)


def test_a_language_model_folder_on_s3_is_fetched_once_per_node_and_versioned_where_it_lies(s3_server, tmp_path,
                                                                                            monkeypatch):
    """`path: s3://.../model` (and `tokenizer:` likewise): the version comes from the folder's
    metadata on the store, with nothing downloaded; loading fetches the folder once, then reuses it."""
    from pyarrow import fs

    from ingest import resolve_model_dir
    from ingest.lm_data import DEFAULT_TOKENIZER
    from models import checkpoint_version
    from models.hf_lm import causal_lm
    from teachers.backend import ResolvedModel, declared_version

    s3, options = s3_server
    monkeypatch.setenv("DISTILLERY_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    config = {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 32}
    built = causal_lm(32, 0, tokenizer=DEFAULT_TOKENIZER, config=config)
    folder = tmp_path / "tiny-lm"
    built.lm.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(resolve_model_dir(DEFAULT_TOKENIZER)).save_pretrained(folder)
    fs.copy_files(str(folder), "runs-data/models/tiny-lm", source_filesystem=fs.LocalFileSystem(),
                  destination_filesystem=s3)
    uri = f"s3://runs-data/models/tiny-lm?{options}"
    model = ResolvedModel("models.hf_lm:causal_lm", {"in_features": 32, "num_classes": 0, "tokenizer": uri,
                                                      "path": uri}, ("models.hf_lm",))
    assert declared_version(model) == checkpoint_version(str(folder))
    assert not (tmp_path / "cache" / "fetched").exists()  # read where it lies
    loaded = model.build()
    assert loaded.model_version == checkpoint_version(str(folder)) and loaded.tokenizer_hash == built.tokenizer_hash
    for name, value in built.lm.state_dict().items():
        assert torch.equal(loaded.lm.state_dict()[name], value), name
    fetched = Path(resolve_model_dir(uri))
    inode = (fetched / "model.safetensors").stat().st_ino
    assert Path(resolve_model_dir(uri)) == fetched and (fetched / "model.safetensors").stat().st_ino == inode
    with pytest.raises(FileNotFoundError, match="no such folder"):
        resolve_model_dir(f"s3://runs-data/models/missing?{options}")
