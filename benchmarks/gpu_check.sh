#!/usr/bin/env bash
# One GPU check, run on a lent GPU machine (see ../shared/gpu/README.md for the kit):
#   bash .gpukit/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/gpu_check.sh
# Prepare here first: bash ../shared/gpu/make-kit.sh && python -m benchmarks.gpu_assets
# (gpu_assets also adds the grpcio and protobuf wheels this project's generated code needs:
# the GPU image's grpcio is older).
# Writes $OUT/gpu_check/*: the tests' output, each run's results and a summary.
set -uo pipefail
OUT_DIR="${OUT:-/tmp}/gpu_check"
mkdir -p "$OUT_DIR"
export DISTILLERY_CACHE_DIR=/tmp/distillery-cache
exec > >(tee "$OUT_DIR/log.txt") 2>&1
nvidia-smi -L
python3 -c "import torch, ray, deepspeed, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'ray', ray.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)"
step() {  # step NAME TIMEOUT COMMAND...: run one check, keep its status and time
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS
  timeout "$limit" "$@"; local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$OUT_DIR/summary.txt"
}
step gpu-tests 120 python3 -m pytest -q -p no:cacheprovider tests/gpu tests/unit/test_kd_terms.py tests/unit/test_student_module.py
step methods-fp32 240 python3 -m orchestration run benchmarks/configs/gpu_methods.yaml --output-dir "$OUT_DIR/runs"
sed "s#TINY_BERT#$PWD/.gpukit/tiny-bert#g" benchmarks/configs/gpu_hf.yaml > /tmp/gpu_hf.yaml
step hf-fp32 180 python3 -m orchestration run /tmp/gpu_hf.yaml --output-dir "$OUT_DIR/runs"
step methods-bf16 180 python3 -m orchestration run benchmarks/configs/gpu_methods.yaml --run-name gpu-methods-bf16 \
  --set student.precision=bf16 --set run.baseline=false --output-dir "$OUT_DIR/runs"
ray stop --force >/dev/null 2>&1
rm -rf "$OUT_DIR"/runs/*/train  # DeepSpeed checkpoints: not needed back here
cat "$OUT_DIR/summary.txt"
