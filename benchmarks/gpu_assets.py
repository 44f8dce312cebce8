"""Writes what benchmarks/gpu_check.sh needs besides the kit: a tiny random BERT with the
MiniLM tokenizer in .gpukit/tiny-bert (the GPU machine cannot download, and the MiniLM
package is too large to carry).   python -m benchmarks.gpu_assets"""

from pathlib import Path

from tests.hf_fixtures import tiny_bert

if __name__ == "__main__":
    folder = Path(".gpukit") / "tiny-bert"
    folder.mkdir(parents=True, exist_ok=True)
    print(tiny_bert(folder))
