"""Student tokens per second for a causal-LM student with served teachers, against the same
student training from soft targets stored before training (and with the teacher in the
worker), in one run:

    python -m benchmarks.llm [--repeats 5]

The language-model case of `benchmarks.pipeline` on `benchmarks/configs/llm.yaml` (the
teacher of `deploy/configs/llm.yaml`, from the cache when it was trained before). Results go
to `benchmarks/results/llm.{md,json}`.
"""

from __future__ import annotations

import sys

from benchmarks.pipeline import main

if __name__ == "__main__":
    main(sys.argv[1:], config="benchmarks/configs/llm.yaml", name="llm",
         title="LLM benchmark: student tokens/s with served teachers vs stored soft targets")
