#!/usr/bin/env bash
# First light on one GPU (issue 16), in ONE device call of about 6 minutes. Each part writes its
# results to OUT as soon as they are measured, so a call cut short keeps every finished part.
#
#   bash scripts/gpu_first_light.sh OUT [PART ...]      (repo root; default: every part, in this order)
#
#   train     `iwsft train` on a random-init Qwen2.5-0.5B-shaped model (carried tokenizer): bf16-mixed,
#             packing, fused LM head, 20 steps of iw-SFT with the cached reference; then the last 10
#             steps again, resumed from the step-10 checkpoint -> first_light.json (step-0 weights
#             exactly 1, loss falls, resume equal, tokens/s, MFU, peak memory)
#   table     one training step at 1.5B / 8k tokens: sft, iw-cached (the recipes' path), the two naive
#             layouts (resident reference; resident reference and q) -> train_step_1.5B.json
#   eval      `iwsft eval --backend hf` of the trained model on 16 held-out arith problems -> eval_arith.json
#   gen       `iwsft bench-gen`: 64 prompts x 1024 new tokens at 0.5B, plain vs budget forcing -> generation.json
#   long      the longest sequence that trains at 1.5B (iw-cached, fused head, checkpointing) -> train_step_1.5B_long.json
#   options   sft and iw-cached at 1.5B/8k without activation checkpointing and with the fused head
#             (the table's rows have both the other way) -> train_step_1.5B_options.json
#   compile   sft and iw-cached at 1.5B/8k, compiled layers, no checkpointing -> train_step_1.5B_compile.json
#
# Before the call, here (both folders are git-ignored; `just first-light-prep` does it):
#   python -c "from harness.core.models import load_tokenizer as t; t('smollm2-135m').save_pretrained('.gpu/tokenizer')"
#   pip download (the device README's platform flags) -d .whl datasets dill multiprocess math-verify \
#       latex2sympy2_extended antlr4-python3-runtime gguf      (what the device image lacks)
# Device call: run(command="bash scripts/gpu_first_light.sh $OUT", carry=[".gpu", ".whl"], timeout_s=420)
# A second, short call reruns what failed: bash scripts/gpu_first_light.sh $OUT long compile
#
# Tested on CPU at tiny shapes (tests/test_gpu_first_light.py) through the FL_* variables below.
set -uo pipefail           # not -e: a failed part is logged and the next one runs
cd "$(dirname "$0")/.."
out=${1:?usage: gpu_first_light.sh OUT [train table eval gen long options compile]}
shift
parts=${*:-train table eval gen long options compile}
for p in $parts; do
  case $p in train|table|eval|gen|long|options|compile) ;;
    *) echo "error: unknown part '$p'; use train, table, eval, gen, long, options or compile" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
log="$out/log.txt"
exec > >(tee -a "$log") 2>&1
py=${PYTHON:-python3}
work=${FL_WORK:-/tmp/iwsft-first-light}
tok=${FL_TOKENIZER:-.gpu/tokenizer}
shape=${FL_SHAPE:-0.5B}                 # the trained model
bshape=${FL_BENCH_SHAPE:-1.5B}          # the training-step table
seq=${FL_SEQ:-8192}
long=${FL_LONG:-32768,65536}
vocab=${FL_VOCAB:-151936}
# two runs per mode, the faster kept: on the H200 a single plain run, the first to generate, took 65 s
# against 17 s when repeated (kernel selection and allocator growth); forced then looked 3.5x cheaper
gen=${FL_GEN:---shape 0.5B --prompts 64 --new-tokens 1024 --waits 2 --repeats 2}
steps=${FL_STEPS:-20}                   # training steps; resumed from the checkpoint at half
mb=${FL_MICRO_BATCH:-64}                # rows per step, packed into one row
tmo=${FL_PART_TIMEOUT:-150}             # seconds per part: one hang does not eat the call
export PYTHONUNBUFFERED=1 IWSFT_CACHE="$work/cache"
mkdir -p "$work"

if [ -d .whl ] && ! $py -c "import math_verify" 2>/dev/null; then
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" .whl/*.whl \
    || echo "FAILED: wheel install"
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
date -u +"start %FT%TZ"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
$py -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"

part() {   # part NAME CMD...: run with the per-part timeout, log its time and status
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name ($(date -u +%T))"
  timeout --signal=INT --kill-after=15 "$tmo" "$@"
  local rc=$?
  echo "=== $name: rc $rc in $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || echo "FAILED: $name (rc $rc)"
  return $rc
}

model="$work/model-$shape"
export py work tok shape model out steps mb
train() {
  [ -f "$model/config.json" ] || $py -m harness.perf.first_light make-model --shape "$shape" --tokenizer "$tok" \
    --out "$model" || return 1
  local run="$work/train" data="$PWD/recipes/tiny/data/arith-add1-smollm2.jsonl"
  rm -rf "$run"
  # 145 rows of about 100 tokens; 64 per step (by default), packed into one row: 2 steps an epoch
  local half=$((steps / 2))
  local args=(model="$model" dataset="$data" output_dir="$run" dtype=bf16-mixed packing=true fused_lm_head=true
              micro_batch_size=$mb global_batch_size=$mb num_epochs=1000 max_steps=$steps learning_rate=3e-4
              save_every=$half keep_checkpoints=3 log_every=1)
  $py -m harness train recipes/tiny/iw-sft.yaml "${args[@]}" || return 1
  cp "$run/metrics.jsonl" "$work/metrics-uninterrupted.jsonl"
  rm -rf "$run/final" "$run/checkpoints/step-$(printf %06d "$steps")"   # as if killed after the checkpoint at half
  $py -m harness train recipes/tiny/iw-sft.yaml "${args[@]}" || return 1
  $py -m harness.perf.first_light check-train --uninterrupted "$work/metrics-uninterrupted.jsonl" --resumed "$run" \
    --resume-from "$half" --out "$out/first_light.json" \
    --extra "{\"model_shape\": \"$shape\", \"recipe\": \"recipes/tiny/iw-sft.yaml\", \"overrides\": \"${args[*]:3}\"}"
}
export -f train
bench=($py -m harness bench --shapes "$bshape" --vocab "$vocab")

for p in $parts; do
  case $p in
    train) tmo=${FL_TRAIN_TIMEOUT:-240} part train bash -c train ;;
    table) part table "${bench[@]}" --seq-lens "$seq" --variants sft,iw-cached,naive-ref,naive-ref-q \
             --out "$out/train_step_$bshape.json" ;;
    eval)
      if [ -f "$work/train/final/config.json" ]; then
        part eval $py -m harness eval --model "$work/train/final" --backend hf --benchmarks arith --limit 16 \
          --thinking-budget 48 --answer-budget 16 --total-budget 512 --no-progress --out "$work/eval" \
          && cp "$(find "$work/eval" -name metrics.json | head -1)" "$out/eval_arith.json"
      else echo "FAILED: eval (no trained model: the train part did not finish)"; fi ;;
    gen) part gen $py -m harness bench-gen $gen --tokenizer "$tok" --out "$out/generation.json" ;;
    long) part long "${bench[@]}" --seq-lens "$long" --variants iw-cached --fused-head --steps 1 --warmup 1 \
            --out "$out/train_step_${bshape}_long.json" ;;
    options) part options "${bench[@]}" --seq-lens "$seq" --variants sft,iw-cached --no-checkpointing --fused-head \
               --out "$out/train_step_${bshape}_options.json" ;;
    compile) part compile "${bench[@]}" --seq-lens "$seq" --variants sft,iw-cached --compile --no-checkpointing \
               --out "$out/train_step_${bshape}_compile.json" ;;
  esac
done
date -u +"end %FT%TZ"
if grep -q "^FAILED" "$log"; then grep "^FAILED" "$log"; exit 1; fi
exit 0
