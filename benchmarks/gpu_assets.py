"""Writes what benchmarks/gpu_check.sh needs besides the kit: a tiny random BERT with the
MiniLM tokenizer in .gpukit/tiny-bert (the GPU machine cannot download, and the MiniLM
package is too large to carry), SmolLM2-135M-Instruct's config and tokenizer without its
weights in .gpukit/smollm2-shape (its architecture, built there with random weights, for the
teacher-scoring checks), and grpcio/protobuf wheels for its Python 3.12 (the GPU
image's grpcio is older than this project's generated code needs).
    python -m benchmarks.gpu_assets"""

import shutil
import subprocess
import sys
from pathlib import Path

from harness.hf_models import tiny_bert

WHEELS = ["grpcio==1.85.3", "protobuf==7.36.2"]
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64"]

if __name__ == "__main__":
    kit = Path(".gpukit")
    folder = kit / "tiny-bert"
    folder.mkdir(parents=True, exist_ok=True)
    print(tiny_bert(folder))
    from ingest import SMOLLM2, resolve_model_dir

    shape = kit / "smollm2-shape"
    shape.mkdir(exist_ok=True)
    for file in Path(resolve_model_dir(SMOLLM2)).iterdir():  # converts the GGUF once, if not yet cached
        if file.suffix in (".json", ".jinja"):
            shutil.copy(file, shape / file.name)
    print(shape)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(kit / "wheels"),
                    *WHEELS], check=True)
