"""Text rows become token sequences in the model's own format (`ingest.token_layout`).

- Prompt/completion: the prompt tokenized as the tokenizer does by itself (its bos, if it
  adds one), then the completion and the tokenizer's eos. The completion and the eos are
  targets; the prompt is context.
- Chat `messages`: rendered by the tokenizer's chat template; every assistant turn (what the
  template renders of it after the generation prompt, its end-of-turn token included) is a
  target, every other turn context. A turn's tokens are found from the rendered text of the
  conversation up to it, so multi-turn rows teach every assistant turn.
- Text: every token a target (after the tokenizer's bos, if it adds one), then the eos.

Rows longer than `data.sequence_length` are cut (counted in the notes); a row with no target
left within the length, a chat row with no assistant turn, or one the template cannot render,
is a `DataError` naming the file, the row and its id: nothing is trained on a broken row.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ingest.source_paths import DataError
from ingest.token_layout import CONTEXT, TARGET, pack, padded, target_mask, token_roles

Turns = list[dict[str, str]]


def _eos(tokenizer) -> list[int]:
    return [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]


def prompt_completion_rows(tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> list[np.ndarray]:
    """Packed `prompt completion <eos>` rows, from one batched tokenization of each side."""
    heads = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    tails = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    eos = _eos(tokenizer)
    return [np.concatenate([pack(head, CONTEXT), pack([*tail, *eos], TARGET)]) for head, tail in zip(heads, tails)]


def text_rows(tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    """Packed `text <eos>` rows: all target after the tokenizer's own leading specials."""
    eos, out = _eos(tokenizer), []
    lead = len(tokenizer("", add_special_tokens=True)["input_ids"])  # the bos a tokenizer adds, if any
    for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]:
        out.append(np.concatenate([pack(ids[:lead], CONTEXT), pack([*ids[lead:], *eos], TARGET)]))
    return out


def _render(tokenizer, turns: Turns, **kwargs: Any) -> str:
    return tokenizer.apply_chat_template(turns, tokenize=False, **kwargs)


def chat_row(tokenizer, turns: Turns) -> np.ndarray:
    """One conversation, packed: the assistant turns targets. Raises ValueError (with why) when
    the template cannot render it, or renders its turns inconsistently."""
    text = _render(tokenizer, turns)
    spans = []
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        prompt, upto = _render(tokenizer, turns[:i], add_generation_prompt=True), _render(tokenizer, turns[:i + 1])
        if not (upto.startswith(prompt) and text.startswith(upto)):
            raise ValueError(f"the chat template renders the conversation up to turn {i} differently from the "
                             f"start of the whole conversation, so its assistant tokens cannot be told apart")
        spans.append((len(prompt), len(upto)))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = np.array([a for a, _ in encoded["offset_mapping"]], np.int64)
    roles = np.full(len(starts), CONTEXT, np.int64)
    for start, end in spans:
        roles[(starts >= start) & (starts < end)] = TARGET
    return pack(encoded["input_ids"], roles)


def chat_rows(tokenizer, conversations: Sequence[Any], where: str, ids: np.ndarray, column: str) -> list[np.ndarray]:
    """Packed chat rows; a row that is not a list of {role, content} turns with an assistant
    turn, or that its template cannot render, is a `DataError` naming it."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{where}: column {column!r} (columns.messages) holds chat messages, but the tokenizer has "
                        f"no chat template; give one in its tokenizer_config.json, or use prompt and completion "
                        f"columns")
    out = []
    for row, turns in enumerate(conversations):
        ok = isinstance(turns, list) and all(isinstance(t, dict) and isinstance(t.get("content"), str)
                                             and isinstance(t.get("role"), str) for t in turns)
        if not ok or not any(t["role"] == "assistant" for t in turns):
            raise DataError(f"{where}: row {row} (id {ids[row]}) of column {column!r} (columns.messages) is not a list "
                            f"of {{role, content}} turns with at least one assistant turn (the turns taught)")
        try:
            out.append(chat_row(tokenizer, [{"role": t["role"], "content": t["content"]} for t in turns]))
        except Exception as err:  # a template's own error (jinja raise_exception) or an inconsistent rendering
            raise DataError(f"{where}: row {row} (id {ids[row]}): the tokenizer's chat template failed on it: "
                            f"{err}") from err
    return out


def learnable(rows: list[np.ndarray], length: int) -> np.ndarray:
    """bool [N]: the rows with a target within `length` (a bundled set keeps only those)."""
    return target_mask(padded(rows, length)).any(1)


def sequences(rows: list[np.ndarray], length: int, where: str, ids: np.ndarray,
              notes: Optional[list[str]]) -> np.ndarray:
    """int64 [N, length]: `rows` cut and right-padded; rows cut are counted in `notes`. A row
    with no target within `length` (its prompt fills it) is a `DataError`."""
    x = padded(rows, length)
    empty = np.flatnonzero(~target_mask(x).any(1))
    if len(empty):
        row = int(empty[0])
        raise DataError(f"{where}: row {row} (id {ids[row]}) has no token to learn within data.sequence_length "
                        f"{length} (its prompt takes {int((token_roles(rows[row]) != TARGET).sum())} of its "
                        f"{len(rows[row])} tokens; {len(empty)} such rows in all); shorten the prompts or raise "
                        f"data.sequence_length")
    full = np.array([len(r) for r in rows], np.int64)
    cut = int((full > length).sum())
    if cut and notes is not None:
        notes.append(f"{where}: {cut} of {len(rows)} rows are longer than data.sequence_length {length} tokens "
                     f"(longest {int(full.max())}) and were cut")
    return x
