"""Write chat rows as a user's own JSONL files, for `deploy/configs/smollm2.yaml`.

    python deploy/examples/write_chat_rows.py                 # -> data/chat_functions/{train,test}.jsonl
    python deploy/examples/write_chat_rows.py --train-rows 48 --test-rows 16 --out /tmp/slice

Each row is a conversation about a function of Python's standard library (text every machine
has): the user asks what the function does, the assistant answers with its docstring (cut to
`--answer-words` words); every third row goes on with a second exchange, the user asking for
the module it lives in and the assistant naming it, so rows have one or two assistant turns.
Test rows come from modules the train rows do not (every fifth file, as the bundled
`stdlib_functions`). Each line has a stable `id` and `messages`, a list of {role, content}.
"""

from __future__ import annotations

import argparse
import ast
import json
import sysconfig
from pathlib import Path
from typing import Iterator

from ingest.text_data import HELD_OUT_EVERY, stdlib_files


def conversations(path: Path, answer_words: int) -> Iterator[list[dict[str, str]]]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        text = ast.get_docstring(node) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
        if not text or len(text.split()) < 8 or len(node.name) > 40:
            continue
        answer = " ".join(text.split()[:answer_words])
        yield [{"role": "user", "content": f"What does the Python function `{node.name}` do?"},
               {"role": "assistant", "content": answer}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/chat_functions")
    parser.add_argument("--train-rows", type=int, default=256)
    parser.add_argument("--test-rows", type=int, default=64)
    parser.add_argument("--answer-words", type=int, default=60)
    args = parser.parse_args()
    files = stdlib_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    wanted = {"train": args.train_rows, "test": args.test_rows}
    rows: dict[str, list] = {"train": [], "test": []}
    for i, path in enumerate(files):
        split = "test" if i % HELD_OUT_EVERY == 0 else "train"
        if len(rows[split]) >= wanted[split]:
            if all(len(rows[s]) >= wanted[s] for s in rows):
                break
            continue
        for turns in conversations(path, args.answer_words):
            if len(rows[split]) < wanted[split]:
                if len(rows[split]) % 3 == 2:  # a second exchange: two assistant turns to learn
                    module = ".".join(path.relative_to(root).with_suffix("").parts)
                    turns = turns + [{"role": "user", "content": "Which module is it in?"},
                                     {"role": "assistant", "content": f"It is in the `{module}` module."}]
                rows[split].append(turns)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, items in rows.items():
        with open(out / f"{split}.jsonl", "w") as fh:
            for number, turns in enumerate(items):
                fh.write(json.dumps({"id": f"{split}-{number}", "messages": turns}) + "\n")
        print(f"{out / split}.jsonl: {len(items)} rows")


if __name__ == "__main__":
    main()
