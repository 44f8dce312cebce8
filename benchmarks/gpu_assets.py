"""Writes what benchmarks/gpu_check.sh needs besides the kit: a tiny random BERT with the
MiniLM tokenizer in .gpukit/tiny-bert (the GPU machine cannot download, and the MiniLM
package is too large to carry), and grpcio/protobuf wheels for its Python 3.12 (the GPU
image's grpcio is older than this project's generated code needs).
    python -m benchmarks.gpu_assets"""

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
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(kit / "wheels"),
                    *WHEELS], check=True)
