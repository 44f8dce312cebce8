#!/usr/bin/env bash
# One GPU check, run on a lent GPU machine (see ../shared/gpu/README.md for the kit):
#   bash .gpukit/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/gpu_check.sh
# Prepare here first: bash ../shared/gpu/make-kit.sh && python -m benchmarks.gpu_assets
# (gpu_assets also adds the grpcio and protobuf wheels this project's generated code needs:
# the GPU image's grpcio is older).
# Writes $OUT/gpu_check/*: the tests' output, each run's results, the throughput table and a
# summary. Each step has its own time limit; together they stay under 9 minutes.
set -uo pipefail
OUT_DIR="${OUT:-/tmp}/gpu_check"
mkdir -p "$OUT_DIR/runs"
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
run() { python3 -m orchestration run "$@" --output-dir "$OUT_DIR/runs"; }
LLM=benchmarks/configs/gpu_llm.yaml
KD='[{name: ce, weight: 0.5}, {name: kd, weight: 0.5}]'

# teacher scoring on CUDA: records against the bare forward + topk/multinomial, and two students'
# requests shared in one forward against one forward each (SmolLM2's architecture, random weights, bf16)
SHAPE=.gpukit/smollm2-shape
step teacher-scoring 120 python3 -m benchmarks.teacher_scoring --name gpu_teacher_scoring --lm "$SHAPE" \
  --random-weights --dtype bfloat16 --sequences 32 --length 512 --repeats 5
step request-batching 150 python3 -m benchmarks.request_batching --name gpu_request_batching --lm "$SHAPE" \
  --random-weights --dtype bfloat16 --gpus 0.5 --requests 8 --length 512 --repeats 3
cp benchmarks/results/gpu_teacher_scoring.* benchmarks/results/gpu_request_batching.* "$OUT_DIR/" 2>/dev/null
# the GPU tests: every KD term, bf16 teachers, speculative scoring, devices
step gpu-tests 90 python3 -m pytest -q -p no:cacheprovider tests/gpu tests/unit/test_devices.py tests/unit/test_kd_terms.py
# every KD family, BYOT and born-again with CUDA Serve teachers and a bf16 student (ZeRO-2, NCCL)
step methods-bf16 150 run benchmarks/configs/gpu_methods.yaml --run-name gpu-methods-bf16 --set student.precision=bf16 \
  --set student.epochs=4
# LLM token KD with the bf16 teacher served: sampled and top-k sparse targets, speculative KD, no-KD baseline
step llm-methods 150 run "$LLM" --run-name gpu-llm-methods --set run.baseline=true \
  --set "distill.methods={top16: {terms: $KD, top_k: 16}, sampled16: {terms: $KD, targets: {kind: sampled, k: 16}}, skd: {terms: [{name: kd}], dense: true, speculative: {top_k: 5, max_rounds: 3}}}"
# ZeRO-3 with the served teacher, the optimizer offloaded to host memory
step llm-zero3-offload 90 run "$LLM" --run-name gpu-llm-zero3 --set student.zero_stage=3 --set student.offload_optimizer=true
# throughput: served teacher against targets held in memory (and the offline store, precomputed on the GPU)
step llm-throughput 180 python3 -m benchmarks.pipeline --config "$LLM" --name gpu_llm --repeats 3
cp benchmarks/results/gpu_llm.* "$OUT_DIR/" 2>/dev/null
ray stop --force >/dev/null 2>&1  # a throw-away machine: nothing else runs Ray there
rm -rf "$OUT_DIR"/runs/*/train  # DeepSpeed checkpoints: not needed back here
for f in "$OUT_DIR"/runs/*/results.md; do echo "== $f"; cat "$f"; done
cat "$OUT_DIR/summary.txt"
