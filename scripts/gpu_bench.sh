#!/usr/bin/env bash
# The performance measurements (docs/performance.md) on one H100, in parts that each fit in a
# 10-minute device call. Every part writes its JSON after each cell, so a part cut short keeps its rows.
#
#   bash scripts/gpu_bench.sh PART [OUT_DIR]      (repo root; OUT_DIR defaults to reports/bench)
#
#   train-0.5B   all five variants, 0.5B, 4k/8k/16k/32k tokens
#   train-1.5B   all five variants, 1.5B, 4k/8k/16k/32k tokens
#   options      sft and iw-cached with the options that may buy MFU or memory: no activation
#                checkpointing (0.5B/4k, 1.5B/8k), the fused LM head (1.5B/8k and 32k), both (1.5B/8k);
#                and the for-each AdamW (the before of the fused one the trainer uses; 0.5B/4k, 1.5B/8k)
#   compile      sft and iw-cached with each decoder layer torch.compile'd, 0.5B/4k and 1.5B/8k
#   best         the options together, for the MFU targets: compiled and no checkpointing (0.5B/4k,
#                1.5B/8k), plus the fused LM head (1.5B/8k)
#   7B           sft and iw-cached at 7B, 4k/8k
#   gen          HF generation, 0.5B, 64 prompts x 1024 tokens, with/without budget forcing
# Order of value if device time runs short (30 device minutes a session): train-1.5B, best, gen,
# train-0.5B, options, compile, 7B.
#
# Needs torch, transformers, accelerate, rich, pyyaml, safetensors (the device image has them; the
# package itself need not be installed). `gen` needs a tokenizer folder, made here beforehand with
#   python -c "from harness.core.models import load_tokenizer as t; t('smollm2-135m').save_pretrained('.gpu/tokenizer')"
# and carried (`.gpu` is git-ignored). Example device call:
#   run(command="bash scripts/gpu_bench.sh train-1.5B $OUT", carry=[".gpu"])
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:?part: train-0.5B, train-1.5B, best, options, compile, 7B or gen}
out=${2:-reports/bench}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
case "$part" in
  train-0.5B) $py -m harness bench --shapes 0.5B --seq-lens 4096,8192,16384,32768 --out "$out/train_step_0.5B.json" ;;
  train-1.5B) $py -m harness bench --shapes 1.5B --seq-lens 4096,8192,16384,32768 --out "$out/train_step_1.5B.json" ;;
  options)
    v=--variants=sft,iw-cached
    $py -m harness bench --shapes 0.5B --seq-lens 4096 $v --no-checkpointing --out "$out/train_step_0.5B_nockpt.json"
    $py -m harness bench --shapes 1.5B --seq-lens 8192 $v --no-checkpointing --out "$out/train_step_1.5B_nockpt.json"
    $py -m harness bench --shapes 1.5B --seq-lens 8192,32768 $v --fused-head --out "$out/train_step_1.5B_fused.json"
    $py -m harness bench --shapes 1.5B --seq-lens 8192 $v --fused-head --no-checkpointing --out "$out/train_step_1.5B_fused_nockpt.json"
    $py -m harness bench --shapes 0.5B --seq-lens 4096 --variants=sft --foreach-optimizer --out "$out/train_step_0.5B_foreach.json"
    $py -m harness bench --shapes 1.5B --seq-lens 8192 --variants=sft --foreach-optimizer --out "$out/train_step_1.5B_foreach.json" ;;
  compile)
    $py -m harness bench --shapes 0.5B --seq-lens 4096 --variants=sft,iw-cached --compile --out "$out/train_step_0.5B_compile.json"
    $py -m harness bench --shapes 1.5B --seq-lens 8192 --variants=sft,iw-cached --compile --out "$out/train_step_1.5B_compile.json" ;;
  best)
    v="--variants=sft,iw-cached --compile --no-checkpointing"
    $py -m harness bench --shapes 0.5B --seq-lens 4096 $v --out "$out/train_step_0.5B_best.json"
    $py -m harness bench --shapes 1.5B --seq-lens 8192 $v --out "$out/train_step_1.5B_best.json"
    $py -m harness bench --shapes 1.5B --seq-lens 8192 $v --fused-head --out "$out/train_step_1.5B_best_fused.json" ;;
  7B) $py -m harness bench --shapes 7B --seq-lens 4096,8192 --variants sft,iw-cached --out "$out/train_step_7B.json" ;;
  gen) $py -m harness bench-gen --shape 0.5B --prompts 64 --new-tokens 1024 --waits 2 --tokenizer .gpu/tokenizer \
         --out "$out/generation.json" ;;
  *) echo "error: unknown part '$part'; use train-0.5B, train-1.5B, best, options, compile, 7B or gen" >&2; exit 2 ;;
esac
