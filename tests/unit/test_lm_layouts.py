"""The token layout with real tokenizer conventions (`ingest.lm_sequences`): SmolLM2's own
tokenizer (from its GGUF file: no bos added, pad == eos, ChatML), and tokenizers built here with
Llama 3's conventions (bos added, no pad, header/eot chat turns) and Qwen2.5's (no bos, pad
<|endoftext|> apart from eos <|im_end|>, ChatML with a default system turn). None has a
separator token."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ingest import load_tokenizer, tokenizer_hash
from ingest.gguf_folder import SMOLLM2
from ingest.lm_data import DEFAULT_TOKENIZER
from ingest.lm_sequences import chat_row, prompt_completion_rows, text_rows
from ingest.token_layout import CONTEXT, TARGET, attention_mask, padded, target_labels, token_ids, token_roles
from ingest.tokenizer import resolve_model_dir

LLAMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                   "{{ m['content'] }}<|eot_id|>{% endfor %}"
                   "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
QWEN_TEMPLATE = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen.<|im_end|>\n{% endif %}"
                 "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _convention(folder: Path, specials: dict[str, str], extra: list[str], template: str, bos_first: bool):
    """The bundled BPE with another model family's special tokens and chat template."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer.from_file(str(Path(resolve_model_dir(DEFAULT_TOKENIZER)) / "tokenizer.json"))
    bpe.add_special_tokens(sorted(set(specials.values()) | set(extra)))
    if bos_first:
        bos = specials["bos_token"]
        bpe.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, bpe.token_to_id(bos))])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, **specials)
    tok.chat_template = template
    tok.save_pretrained(str(folder))
    return load_tokenizer(str(folder))


@pytest.fixture(scope="module")
def conventions(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    llama3 = _convention(root / "llama3", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
                         ["<|start_header_id|>", "<|end_header_id|>"], LLAMA3_TEMPLATE, bos_first=True)
    qwen = _convention(root / "qwen2.5", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
                       ["<|im_start|>"], QWEN_TEMPLATE, bos_first=False)
    return {"smollm2": load_tokenizer(SMOLLM2), "llama3": llama3, "qwen2.5": qwen}


CHAT = [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "Seven."},
        {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "Eleven."}]
END_OF_TURN = {"smollm2": "<|im_end|>", "llama3": "<|eot_id|>", "qwen2.5": "<|im_end|>"}


def _text(tok, row: np.ndarray, role: int) -> str:
    return tok.decode(token_ids(row)[token_roles(row) == role].tolist())


@pytest.mark.parametrize("name", ["smollm2", "llama3", "qwen2.5"])
def test_prompt_completion_rows_keep_the_tokenizers_own_bos_and_teach_the_eos(conventions, name):
    tok = conventions[name]
    assert getattr(tok, "sep_token_id", None) is None  # no family here has a separator
    row = prompt_completion_rows(tok, ["def f(x):"], [" return x"])[0]
    ids, roles = token_ids(row).tolist(), token_roles(row).tolist()
    adds_bos = name == "llama3"
    assert (ids[0] == tok.bos_token_id) == adds_bos
    assert roles == [CONTEXT] * roles.count(CONTEXT) + [TARGET] * roles.count(TARGET)
    assert ids[-1] == tok.eos_token_id and roles[-1] == TARGET  # the end of a completion is learned
    x = padded([row, row[:3]], len(row) + 2)
    labels = target_labels(x)
    assert labels.tolist().count(tok.eos_token_id) == 1  # pad == eos (SmolLM2) never hides it
    assert attention_mask(x).sum(1).tolist() == [len(row), 3]
    text = text_rows(tok, ["plain words"])[0]
    assert (token_roles(text) == TARGET).sum() == len(text) - int(adds_bos)


@pytest.mark.parametrize("name", ["smollm2", "llama3", "qwen2.5"])
def test_chat_rows_teach_every_assistant_turn_with_its_end_of_turn_token(conventions, name):
    tok = conventions[name]
    row = chat_row(tok, CHAT)
    taught = _text(tok, row, TARGET)
    end = END_OF_TURN[name]
    assert taught.replace("\n", "") == f"Seven.{end}Eleven.{end}"
    context = _text(tok, row, CONTEXT)
    assert "Name a prime." in context and "Another?" in context and "Seven." not in context
    assert token_ids(row).tolist() == tok.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]


def test_the_same_tokenizer_in_another_folder_has_the_same_hash_and_specials_count(conventions, tmp_path):
    smol = conventions["smollm2"]
    smol.save_pretrained(str(tmp_path / "copy"))
    assert tokenizer_hash(load_tokenizer(str(tmp_path / "copy"))) == tokenizer_hash(smol)
    changed = load_tokenizer(str(tmp_path / "copy"))
    changed.pad_token = "<|im_start|>"  # the same vocabulary with another pad id is another tokenizer
    assert tokenizer_hash(changed) != tokenizer_hash(smol)


def test_a_causal_lm_reads_packed_rows_of_a_tokenizer_without_bos_or_pad(conventions):
    from models.hf_lm import causal_lm

    tok = conventions["qwen2.5"]
    folder = tok.name_or_path
    torch.manual_seed(0)
    model = causal_lm(32, len(tok), folder, config={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                                                    "num_hidden_layers": 2, "num_attention_heads": 2,
                                                    "num_key_value_heads": 1, "max_position_embeddings": 64}).eval()
    rows = [chat_row(tok, CHAT[:2]), chat_row(tok, CHAT)]
    x = torch.from_numpy(padded(rows, 32))
    with torch.no_grad():
        taught = model(x)
        alone = [model(torch.from_numpy(padded([r], len(r[:32])))) for r in rows]
    assert torch.allclose(taught, torch.cat(alone), atol=1e-4)  # padding changes nothing
    assert taught.shape == (len(target_labels(x)), len(tok))


def test_a_student_made_from_its_teachers_layers_and_the_versions_from_metadata():
    """`layers` keeps those decoder layers of SmolLM2 (with its embeddings, norm and head); the
    version a pretrained model reports is the one read from its checkpoint's metadata alone."""
    from models.hf_lm import causal_lm
    from teachers.backend import ResolvedModel, declared_version

    kwargs = {"in_features": 96, "num_classes": 49152, "tokenizer": SMOLLM2, "path": SMOLLM2, "dtype": "float32"}
    teacher = causal_lm(**kwargs)
    student = causal_lm(**kwargs, layers=[0, 10, 29])
    assert len(student.lm.model.layers) == 3 and student.lm.config.num_hidden_layers == 3
    assert torch.equal(student.lm.model.layers[1].mlp.up_proj.weight, teacher.lm.model.layers[10].mlp.up_proj.weight)
    assert [layer.self_attn.layer_idx for layer in student.lm.model.layers] == [0, 1, 2]
    assert next(student.parameters()).dtype == torch.float32 and student.output_space == teacher.output_space
    for model, built in ((kwargs, teacher), ({**kwargs, "layers": [0, 10, 29]}, student)):
        assert declared_version(ResolvedModel("models.hf_lm:causal_lm", model, ("models.hf_lm",))) == built.model_version
    x = torch.from_numpy(padded([chat_row(load_tokenizer(SMOLLM2), CHAT)], 96))
    with torch.no_grad():
        nll, tokens = student.summed_nll(x)
        logits = student(x)
    assert 0 < tokens == len(target_labels(x)) == len(logits)
    assert float(nll) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, target_labels(x), reduction="sum")),
                                       rel=1e-4)


def test_an_exported_student_keeps_its_chat_template_and_generation_config(tmp_path):
    """The folder a phase exports (`students.phase_export.write_lm_folder`) loads back as the
    same model, with the teacher's chat template and generation settings."""
    from transformers import AutoTokenizer, GenerationConfig

    from models.hf_lm import causal_lm
    from students.phase_export import full_state_dict, write_lm_folder

    kwargs = {"in_features": 96, "num_classes": 49152, "tokenizer": SMOLLM2, "dtype": "float32"}
    student = causal_lm(**kwargs, path=SMOLLM2, layers=[0, 29])
    write_lm_folder(student.lm, full_state_dict(student.lm), SMOLLM2, tmp_path)
    source = Path(resolve_model_dir(SMOLLM2))
    original = AutoTokenizer.from_pretrained(source)
    exported = AutoTokenizer.from_pretrained(tmp_path)
    assert exported.chat_template == original.chat_template and exported.chat_template
    assert tokenizer_hash(exported) == tokenizer_hash(original)
    assert GenerationConfig.from_pretrained(tmp_path).to_dict() == GenerationConfig.from_pretrained(source).to_dict()
    again = causal_lm(**kwargs, path=str(tmp_path))
    assert len(again.lm.model.layers) == 2
    assert torch.equal(again.lm.model.layers[1].mlp.up_proj.weight, student.lm.model.layers[1].mlp.up_proj.weight)
