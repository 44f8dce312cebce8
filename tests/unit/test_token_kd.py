"""Token-level KD for causal LMs: target positions, the stdlib prompt/completion data, the
causal-LM backend, per-token records (dense, top-k, chunked), the losses on them and the
tokenizer refusal."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.hf_models import MINILM
from ingest.batches import Batch, plan_epoch
from ingest.config import DataConfig
from ingest.lm_data import DEFAULT_TOKENIZER, encode_examples
from ingest.loading import load_dataset
from ingest.token_layout import (CONTEXT, TARGET, attention_mask, pack, padded, prompt_lengths, target_labels,
                                 target_mask, token_ids)
from ingest.tokenizer import load_tokenizer, tokenizer_hash
from models.hf_lm import causal_lm
from students.losses import CompositeLoss, Term
from teachers.errors import IncompatibleTeacherError
from teachers.loaded import LoadedTeacher, TeacherAppArgs
from teachers.soft_targets import concat_rows, pack_soft_targets, validate_soft_targets
from teachers.targets import TeacherTargets
from teachers.tokenizer_check import check_tokenizer

BOS, EOS = 1, 3
LENGTH = 24
TINY = {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": LENGTH}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(DEFAULT_TOKENIZER)


@pytest.fixture(scope="module")
def sequences(tokenizer):
    pairs = [("def add(a, b):", "Return the sum."),
             ("def f():", "Do nothing at all, quietly."),
             ("def very_long_name_for_a_function(first_argument, second_argument, third):", "Short doc text here.")]
    return encode_examples(tokenizer, pairs, LENGTH)


def _rows(*rows: tuple[list[int], list[int]], length: int = 8) -> np.ndarray:
    """Packed sequences of (context, target) token lists."""
    return padded([np.concatenate([pack(c, CONTEXT), pack(g, TARGET)]) for c, g in rows], length)


def _prompts(tokenizer, prompts: list[str]) -> torch.Tensor:
    return torch.from_numpy(padded([pack(ids, CONTEXT) for ids in tokenizer(prompts)["input_ids"]], LENGTH))


def _teacher(tmp_path=None, head_chunk=4096, top_k=8, dense_max_classes=16, dtype="float32") -> LoadedTeacher:
    torch.manual_seed(0)
    args = TeacherAppArgs(name="gpt", factory="models.hf_lm:causal_lm",
                          kwargs={"in_features": LENGTH, "num_classes": 1024, "tokenizer": DEFAULT_TOKENIZER,
                                  "config": TINY, "head_chunk": head_chunk},
                          allowed_modules=["models.hf_lm"], weights_path=None, in_features=LENGTH, temperature=2.0,
                          top_k=top_k, dense_max_classes=dense_max_classes, dtype=dtype)
    return LoadedTeacher.load(args)


def test_target_positions_skip_prompt_and_padding():
    ids = torch.from_numpy(_rows(([BOS, 10, 11], [20, 21, EOS]),        # prompt, completion and its end, padding
                                 ([BOS], [30, 31, 32, 33, 34, 35, 36]),  # plain text: all targets
                                 ([BOS, 10, 11, 12, 13, 14, 15, 16], [])))  # the prompt fills the window
    assert target_mask(ids).tolist() == [[False, False, True, True, True, False, False],
                                         [True] * 7,
                                         [False] * 7]
    expected = [20, 21, EOS, 30, 31, 32, 33, 34, 35, 36]
    assert target_labels(ids).tolist() == expected
    labels = target_labels(ids.numpy())
    assert isinstance(labels, np.ndarray) and labels.tolist() == expected
    assert attention_mask(ids).sum(1).tolist() == [6, 8, 8]
    assert prompt_lengths(ids).tolist() == [3, 1, 8] == prompt_lengths(ids.numpy()).tolist()
    assert token_ids(ids)[0].tolist() == [BOS, 10, 11, 20, 21, EOS, 0, 0]


def test_sequences_are_prompt_completion_eos_padded(tokenizer, sequences):
    first = token_ids(sequences[0]).tolist()
    prompt = tokenizer("def add(a, b):")["input_ids"]
    assert first[:len(prompt)] == prompt and tokenizer.sep_token_id not in first
    assert (target_labels(sequences[:1]) != tokenizer.pad_token_id).all()
    assert target_labels(sequences[:1])[-1] == tokenizer.eos_token_id  # the end of the completion is taught
    assert sequences[0, -1] == 0 and (sequences[2] != 0).all() and tokenizer.eos_token_id not in token_ids(sequences[2])
    assert prompt_lengths(sequences[:1]).tolist() == [len(prompt)]


def test_function_dataset_labels_batches_per_target_token():
    cfg = DataConfig(dataset="stdlib_functions", tokenizer=DEFAULT_TOKENIZER, sequence_length=LENGTH,
                     train_windows=64, test_windows=16)
    dataset = load_dataset(cfg)
    assert dataset.kind == "lm" and dataset.num_classes == 1024
    assert dataset.output_space == f"tokens:1024:{dataset.tokenizer_hash}"
    batch = plan_epoch(dataset.train, epoch=0, seed=0, shard=0, num_shards=2, batch_size=8)[0]
    assert batch.x.shape == (8, LENGTH) and len(batch.y) == int(target_mask(torch.from_numpy(batch.x)).sum())
    held_out = {tuple(s) for s in dataset.test.x}
    assert not held_out & {tuple(s) for s in dataset.train.x}


def test_causal_lm_computes_logits_at_target_positions_only(sequences):
    torch.manual_seed(0)
    model = causal_lm(LENGTH, 1024, DEFAULT_TOKENIZER, config=TINY, head_chunk=5).eval()
    ids = torch.from_numpy(sequences)
    with torch.no_grad():
        rows = model(ids)
        full = model.lm(input_ids=token_ids(ids), attention_mask=attention_mask(ids).long()).logits[:, :-1]
        chunked = torch.cat(list(model.head_chunks(model.target_hidden(ids))))
    mask = target_mask(ids)
    assert rows.shape == (int(mask.sum()), 1024)
    assert torch.allclose(rows, full[mask], atol=1e-5) and torch.allclose(rows, chunked, atol=1e-6)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 1024\)"):
        model(torch.from_numpy(_rows(([BOS], [5000, 7]), length=3)))
    with pytest.raises(ValueError, match="exactly one of path"):
        causal_lm(LENGTH, 1024, DEFAULT_TOKENIZER)
    with pytest.raises(ValueError, match="exceed the model's 24 positions"):
        causal_lm(64, 1024, DEFAULT_TOKENIZER, config=TINY)


def test_teacher_records_have_one_row_per_target_token_dense_topk_and_chunked(sequences):
    teacher = _teacher()
    chunked = _teacher(head_chunk=3)
    assert teacher.output_space.startswith("tokens:1024:")
    batches = [Batch.of_inputs("b0", sequences[:2]), Batch.of_inputs("b1", sequences[2:])]
    rows = [int(target_mask(torch.from_numpy(b.teacher_x)).sum()) for b in batches]
    topk = teacher.records(batches)
    for record, n, batch_id in zip(topk, rows, [b.batch_id for b in batches]):
        assert not record.is_dense and record.topk_idx.shape == (n, 8)
        validate_soft_targets(record, batch_id=batch_id, batch_size=n, output_space=teacher.output_space,
                              temperature=2.0)
    again = chunked.records(batches)
    for a, b in zip(topk, again):
        np.testing.assert_array_equal(a.topk_idx, b.topk_idx)
        np.testing.assert_allclose(a.tail_logprob, b.tail_logprob, atol=1e-5)
    dense = teacher.records(batches, dense_max_classes=4096)
    assert dense[0].is_dense and dense[0].logprob.shape == (rows[0], 1024)
    top128 = teacher.records(batches, top_k=128)
    assert top128[1].topk_idx.shape == (rows[1], 128)
    parts = teacher.perplexity(sequences)
    with torch.no_grad():
        ids = torch.from_numpy(sequences)
        nll = F.cross_entropy(teacher.module(ids), target_labels(ids), reduction="sum")
    assert parts["tokens"] == sum(rows) and parts["nll"] == pytest.approx(float(nll), rel=1e-5)


def test_a_bfloat16_language_model_teacher_sends_float32_records_close_to_its_float32_self(sequences):
    full, half = _teacher(dense_max_classes=4096), _teacher(dense_max_classes=4096, dtype="bfloat16")
    assert next(half.module.parameters()).dtype == torch.bfloat16
    batch = Batch.of_inputs("b0", sequences)
    ours, theirs = half.records([batch])[0], full.records([batch])[0]
    assert ours.logprob.dtype == np.float32 and ours.logprob.shape == theirs.logprob.shape
    assert np.abs(np.exp(ours.logprob) - np.exp(theirs.logprob)).sum(1).max() < 0.1  # total variation x2
    assert half.perplexity(sequences)["nll"] == pytest.approx(full.perplexity(sequences)["nll"], rel=0.02)


def test_concat_rows_joins_chunks_in_order():
    logits = np.random.default_rng(0).normal(size=(7, 40)).astype(np.float32)
    meta = dict(batch_id="b", teacher="t", teacher_version="v", temperature=1.0, output_space="tokens:40:h")
    whole = pack_soft_targets(logits, dense_max_classes=8, top_k=5, **meta)
    joined = concat_rows([pack_soft_targets(logits[i:i + 3], dense_max_classes=8, top_k=5, **meta) for i in (0, 3, 6)])
    np.testing.assert_array_equal(joined.topk_idx, whole.topk_idx)
    np.testing.assert_array_equal(joined.topk_logprob, whole.topk_logprob)
    dense = concat_rows([pack_soft_targets(logits[:4], dense_max_classes=64, top_k=5, **meta),
                         pack_soft_targets(logits[4:], dense_max_classes=64, top_k=5, **meta)])
    np.testing.assert_allclose(dense.logprob, torch.log_softmax(torch.from_numpy(logits), -1).numpy(), atol=1e-5)


@pytest.mark.parametrize("term", ["kd", "reverse_kl", "jsd"])
def test_token_kd_terms_average_over_target_tokens(sequences, term):
    """Forward KL, reverse KL and JSD on per-token records: the mean over target positions of the
    per-token divergence (prompt and padding positions take no part)."""
    teacher = _teacher(dense_max_classes=4096)
    ids = torch.from_numpy(sequences)
    record = teacher.records([Batch.of_inputs("b", sequences)])[0]
    torch.manual_seed(1)
    student = torch.randn(len(record.logprob), 1024, requires_grad=True)
    labels = target_labels(ids)
    out = CompositeLoss([Term(term)], temperature=2.0)(student, labels, TeacherTargets({"gpt": record}, {"gpt": 1.0}))
    p_t = torch.from_numpy(record.logprob)  # at the record's temperature, 2
    p_s = F.log_softmax(student / 2.0, -1)
    kl = lambda a, b: (a.exp() * (a - b)).sum(-1)  # noqa: E731
    if term == "kd":
        expected = kl(p_t, p_s)
    elif term == "reverse_kl":
        expected = kl(p_s, p_t)
    else:
        m = torch.logsumexp(torch.stack([p_t, p_s]) + torch.log(torch.tensor(0.5)), 0)
        expected = 0.5 * kl(p_t, m) + 0.5 * kl(p_s, m)
    assert float(out[term].detach()) == pytest.approx(float(expected.mean() * 4.0), rel=1e-4)
    out["total"].backward()
    assert student.grad.abs().sum() > 0


def test_a_teacher_with_another_tokenizer_is_refused_naming_both(tokenizer):
    ours, theirs = load_tokenizer(DEFAULT_TOKENIZER), load_tokenizer(MINILM)
    with pytest.raises(IncompatibleTeacherError) as refused:
        check_tokenizer("bert-vocab", tokenizer_hash(theirs), tokenizer_hash(ours), DEFAULT_TOKENIZER,
                        len(theirs), len(ours))
    message = str(refused.value)
    for part in ("bert-vocab", "30522 tokens", tokenizer_hash(theirs), "1024 tokens", tokenizer_hash(ours)):
        assert part in message


def test_greedy_generation_of_a_padded_batch_matches_each_prompt_alone(tokenizer):
    torch.manual_seed(0)
    model = causal_lm(LENGTH, 1024, DEFAULT_TOKENIZER, config=TINY).eval()
    prompts = _prompts(tokenizer, ["def add(a, b):", "def f():"])
    batch, lengths = model.generate(prompts, max_new_tokens=6, temperature=0)
    for row in range(2):
        alone, size = model.generate(prompts[row:row + 1], max_new_tokens=6, temperature=0)
        assert torch.equal(batch[row], alone[0]) and lengths[row] == size[0]
        assert (batch[row, int(lengths[row]):] == 0).all()
    sampled = [model.generate(prompts, max_new_tokens=6, temperature=1.0, seed=s)[0] for s in (1, 1, 2)]
    assert torch.equal(sampled[0], sampled[1]) and not torch.equal(sampled[0], sampled[2])


def test_generated_rows_become_prompt_completion_sequences(tmp_path, tokenizer, sequences):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ingest.lm_data import GENERATED_MANIFEST, generated_sequences
    from orchestration.regimes.sequence_level import prompt_part

    fills = _rows(([BOS, 10, 11, 12], []), length=4)  # a prompt that fills the window: nothing to complete
    rows, prompts = prompt_part(np.concatenate([sequences, padded(list(fills), LENGTH)]))
    assert rows.tolist() == [0, 1]  # the third prompt fills the window too
    ends = prompt_lengths(sequences)
    assert (prompts[0, :ends[0]] == sequences[0, :ends[0]]).all() and (prompts[0, ends[0]:] == 0).all()
    table = pa.table({"row": [1, 0], "sample": [0, 0],
                      "prompt_ids": [[BOS, 40], [BOS, 50, 51]],
                      "completion_ids": [[60, 61, EOS], [70, 71, 72, 73, 74]]})
    pq.write_table(table, tmp_path / "part.parquet")
    with pytest.raises(FileNotFoundError, match="run `distillery generate`"):
        generated_sequences(tmp_path, 8)
    (tmp_path / GENERATED_MANIFEST).write_text("{}")
    out = generated_sequences(tmp_path, 7)
    assert out.tolist() == padded(list(_rows(([BOS, 50, 51], [70, 71, 72, 73, 74]), ([BOS, 40], [60, 61, EOS]),
                                             length=8)), 7).tolist()  # row 0 first; cut to the window


def test_generated_completions_on_object_storage_are_read_from_the_shards_their_manifest_names(s3_server):
    """`distillery generate` into a URI: each attempt writes its own subfolder and the manifest
    written last names its shards; students read exactly those, never an interrupted attempt's."""
    import pyarrow as pa

    from cluster import join, write_parquet, write_text
    from ingest.lm_data import GENERATED_MANIFEST, generated_sequences

    s3, options = s3_server
    folder = f"s3://runs-data/run/generated?{options}"
    done = pa.table({"row": [0], "sample": [0], "prompt_ids": [[BOS, 40]], "completion_ids": [[60, EOS]]})
    interrupted = pa.table({"row": [0], "sample": [1], "prompt_ids": [[BOS, 9]], "completion_ids": [[9, EOS]]})
    write_parquet(done, join(folder, "attempt-b", "part.parquet"))
    write_parquet(interrupted, join(folder, "attempt-a", "part.parquet"))
    with pytest.raises(FileNotFoundError, match="no finished generated dataset"):
        generated_sequences(folder, 6)
    write_text(join(folder, GENERATED_MANIFEST), json.dumps({"key": {}, "rows": 1, "files": ["attempt-b/part.parquet"]}))
    assert generated_sequences(folder, 6).tolist() == _rows(([BOS, 40], [60, EOS]), length=6).tolist()


def test_a_language_model_teacher_answers_token_batches_over_grpc_in_chunks(sequences):
    """The TeacherService carries per-token records like any other: one row per target token,
    the reply split into small chunks, the same values as the teacher computes locally."""
    from teachers.grpc_client import EndpointSpec, GrpcTeacher
    from teachers.grpc_service import ServerSecurity, start_teacher_server

    teacher = _teacher()
    server, port = start_teacher_server(teacher, host="127.0.0.1", port=0, security=ServerSecurity(insecure=True),
                                        chunk_bytes=256)
    try:
        remote = GrpcTeacher(EndpointSpec(f"grpc://127.0.0.1:{port}"), name="gpt", timeout_s=30, temperature=2.0,
                             top_k=8, dense_max_classes=16)
        info = remote.describe()
        assert info["output_space"] == teacher.output_space and info["num_classes"] == 1024
        record = remote.remote({"batches": [{"batch_id": "b", "inputs": sequences}]}).result(timeout_s=30)[0]
        local = teacher.records([Batch.of_inputs("b", sequences)], temperature=2.0, top_k=8, dense_max_classes=16)[0]
        assert record.topk_idx.shape == (int(target_mask(torch.from_numpy(sequences)).sum()), 8)
        np.testing.assert_array_equal(record.topk_idx, local.topk_idx)
        remote.close()
    finally:
        server.stop(grace=None)


def test_a_language_model_teacher_sends_sampled_targets_over_grpc(sequences):
    """target_kind sampled travels in the request: the endpoint answers k draws per target token
    with weights 1/k, the same draws the teacher makes locally for that batch id."""
    from teachers.grpc_client import EndpointSpec, GrpcTeacher
    from teachers.grpc_service import ServerSecurity, start_teacher_server

    teacher = _teacher(head_chunk=3)  # several head chunks, as a long sequence has
    server, port = start_teacher_server(teacher, host="127.0.0.1", port=0, security=ServerSecurity(insecure=True))
    try:
        remote = GrpcTeacher(EndpointSpec(f"grpc://127.0.0.1:{port}"), name="gpt", timeout_s=30, temperature=2.0,
                             top_k=12, dense_max_classes=16, target_kind="sampled")
        record = remote.remote({"batches": [{"batch_id": "b", "inputs": sequences}]}).result(timeout_s=30)[0]
        local = teacher.records([Batch.of_inputs("b", sequences)], temperature=2.0, top_k=12, dense_max_classes=16,
                                target_kind="sampled")[0]
        assert record.kind == "sampled" and record.topk_idx.shape == (len(local.topk_idx), 12)
        np.testing.assert_array_equal(record.topk_idx, local.topk_idx)
        np.testing.assert_allclose(record.sample_weight.astype(np.float32), 1 / 12, rtol=1e-3)
        remote.close()
    finally:
        server.stop(grace=None)


def test_padding_after_the_longest_sequence_is_never_computed():
    """A batch padded far beyond its longest sequence gives the same target rows, logits and
    NLL as the same batch padded to its longest sequence, and the model only sees the latter."""
    teacher = _teacher().module
    short = torch.from_numpy(_rows(([BOS, 10, 11], [20, 21, EOS]), ([BOS, 12], [22, EOS]), length=LENGTH))
    seen = []
    hook = teacher.lm.base_model.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs["input_ids"].shape),
                                                           with_kwargs=True)
    try:
        with torch.no_grad():
            logits, (nll, tokens) = teacher(short), teacher.summed_nll(short)
    finally:
        hook.remove()
    assert seen == [(2, 6), (2, 6)]  # the longest sequence has 6 entries; LENGTH is 24
    full = teacher.lm(input_ids=token_ids(short), attention_mask=attention_mask(short).long()).logits[:, :-1]
    expected = full[target_mask(short)][:, :teacher.vocab_size]
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert tokens == 5 and float(nll) == pytest.approx(
        float(torch.nn.functional.cross_entropy(expected, target_labels(short), reduction="sum")), rel=1e-5)
