"""Write prompt/completion pairs as a user's own JSONL files, for `deploy/configs/own_llm.yaml`.

    python deploy/examples/write_own_functions.py          # -> data/own_functions/{train,test}.jsonl
    python deploy/examples/write_own_functions.py --chat   # the same pairs as chat messages

The pairs are the functions of Python's standard library (on every machine): the prompt is a
function's signature, the completion its docstring; test pairs come from modules the train
pairs do not (every fifth file), as in the bundled `stdlib_functions`. Each line has a stable
`id`, and `prompt` and `completion`, or with `--chat` a `messages` list of a user turn and an
assistant turn. Functions whose signature could fill the sequence are skipped
(`--max-prompt-chars`): a row with nothing to learn is refused by `distillery check`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ingest.lm_data import function_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/own_functions")
    parser.add_argument("--train-rows", type=int, default=2048)
    parser.add_argument("--test-rows", type=int, default=512)
    parser.add_argument("--chat", action="store_true", help="write chat messages instead of prompt/completion")
    parser.add_argument("--max-prompt-chars", type=int, default=62,
                        help="skip longer signatures: a prompt must leave the sequence room to learn, and a character "
                             "is at most a token (62 fits own_llm.yaml's 64-token sequences)")
    args = parser.parse_args()
    examples = {split: [(p, c) for p, c in rows if len(p) <= args.max_prompt_chars]
                for split, rows in function_examples().items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", args.train_rows), ("test", args.test_rows)):
        with open(out / f"{split}.jsonl", "w") as fh:
            for number, (prompt, completion) in enumerate(examples[split][:rows]):
                line = {"id": f"{split}-{number}"}
                if args.chat:
                    line["messages"] = [{"role": "user", "content": prompt},
                                        {"role": "assistant", "content": completion}]
                else:
                    line.update(prompt=prompt, completion=completion)
                fh.write(json.dumps(line) + "\n")
        print(f"{out / split}.jsonl: {min(rows, len(examples[split]))} rows")


if __name__ == "__main__":
    main()
