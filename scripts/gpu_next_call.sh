#!/usr/bin/env bash
# The next device call (issue 27), in ONE call of at most 9 minutes: every part's results are merged into
# OUT/results.json as the part finishes (a call returns at most 8 files: here 2, results.json and log.txt).
#
#   bash scripts/gpu_next_call.sh OUT [PART ...]      (repo root; default: every part, in this order)
#
#   card       bf16 GEMM rate and device copy bandwidth, beside the spec peak MFU divides by
#   base       1.5B / 8k, sft and iw-cached, the default options (checkpointing, plain head, SDPA)
#   profile    one 1.5B / 8k training step under torch.profiler, kernel time by category
#   cudnn      1.5B / 8k with SDPA's cuDNN kernel, compiled layers, no checkpointing, fused head (the MFU candidate)
#   flex       the same with FlexAttention
#   head       the same with SDPA (torch's pick), plain head against fused head
#   headc      the fused head with its chunk math through torch.compile (fused_head_compile), same options
#   mb         0.5B / 4k at micro-batch 1 and 2 (compiled, no checkpointing): the 0.5B MFU target
#   train      `iwsft bench-train`: `iwsft train` against `iwsft bench` at 1.5B / 8k, compiled, no checkpointing,
#              fused head (the MFU target is judged on `iwsft train` itself; carried tokenizer; 240 s allowed)
#   7B         7B / 4k, sft and iw-cached: only on an H200 (fp32 master weights + AdamW need about 114 GiB)
#   gen        `iwsft bench-gen`, 0.5B, 64 prompts x 1024 new tokens, plain vs budget forcing, --repeats 2
#
# A part runs under a per-part timeout (NC_PART_TIMEOUT, default 150 s, cut to what is left of NC_LIMIT);
# once NC_GUARD seconds (default 500) have passed, the parts left are skipped and say so in results.json.
# Nothing is downloaded: HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE are set.
# Before the call, here: `just first-light-prep` (.gpu/tokenizer, and .whl: the wheels `iwsft train` needs that
# the device image lacks, installed by the train part).
# Device call: run(command="bash scripts/gpu_next_call.sh $OUT", carry=[".gpu", ".whl"], timeout_s=570)
# After it, here: python -m harness.perf.device_call split OUT/results.json reports/bench && iwsft bench-report
#
# Rehearsed on CPU at tiny shapes (tests/test_gpu_next_call.py) through the NC_* variables below.
set -uo pipefail           # not -e: a failed part is logged and the next one runs
cd "$(dirname "$0")/.."
out=${1:?usage: gpu_next_call.sh OUT [card base profile cudnn flex head headc mb train 7B gen]}
shift
all="card base profile cudnn flex head headc mb train 7B gen"
parts=${*:-$all}
for p in $parts; do
  case " $all " in *" $p "*) ;; *) echo "error: unknown part '$p'; use: $all" >&2; exit 2 ;; esac
done
mkdir -p "$out"
log="$out/log.txt"
res="$out/results.json"
exec > >(tee -a "$log") 2>&1
py=${PYTHON:-python3}
work=${NC_WORK:-/tmp/iwsft-next-call}
tok=${NC_TOKENIZER:-.gpu/tokenizer}
big=${NC_SHAPE:-1.5B}; seq=${NC_SEQ:-8192}           # the 1.5B / 8k rows
small=${NC_SMALL_SHAPE:-0.5B}; sseq=${NC_SMALL_SEQ:-4096}
shape7=${NC_7B_SHAPE:-7B}; seq7=${NC_7B_SEQ:-4096}
vocab=${NC_VOCAB:-151936}
gen=${NC_GEN:---shape 0.5B --prompts 64 --new-tokens 1024 --waits 2 --repeats 2}
tmo=${NC_PART_TIMEOUT:-150}
guard=${NC_GUARD:-500}
limit=${NC_LIMIT:-540}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 IWSFT_CACHE="$work/cache"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$work"
rm -f "$res"
if [ -d .whl ] && ! $py -c "import datasets, math_verify" 2>/dev/null; then   # for `iwsft train` (the train part)
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" .whl/*.whl \
    || echo "FAILED: wheel install"
  export PYTHONPATH="$PYTHONPATH:$work/site"
fi
date -u +"start %FT%TZ"
gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi")
echo "$gpu"

part() {   # part NAME CMD...: run under the per-part timeout (never past the call's limit), merge its files
  local name=$1; shift
  local left=$((limit - SECONDS)) t=$tmo
  [ "$left" -lt "$t" ] && t=$left
  echo "=== $name ($(date -u +%T), ${t} s allowed)"
  local files=("$work/$name"-*.json)
  rm -f "${files[@]}"
  timeout --signal=INT --kill-after=10 "$t" "$@"
  local rc=$? status=ok
  echo "=== $name: rc $rc in $((SECONDS - t0)) s"
  if [ $rc -ne 0 ]; then status="failed (rc $rc)"; [ $rc -eq 124 ] && status="timed out after $t s"; echo "FAILED: $name ($status)"; fi
  shopt -s nullglob; files=("$work/$name"-*.json); shopt -u nullglob
  $py -m harness.perf.device_call merge "$res" "$name" "$status" "${files[@]}"
  return $rc
}
skip() { echo "SKIPPED: $1 ($2)"; $py -m harness.perf.device_call merge "$res" "$1" "skipped: $2"; }

bench=($py -m harness bench --vocab "$vocab" --variants sft,iw-cached)
best=(--compile --no-checkpointing)
for p in $parts; do
  t0=$SECONDS
  if [ "$SECONDS" -ge "$guard" ]; then skip "$p" "guard: ${SECONDS} s of ${guard} used"; continue; fi
  case $p in
    card) part card $py -m harness.perf.device_call card --out "$work/card-header.json" ;;
    base) part base "${bench[@]}" --shapes "$big" --seq-lens "$seq" --out "$work/base-train_step_${big}_next.json" ;;
    profile) part profile $py -m harness.perf.device_call profile --shape "$big" --seq-len "$seq" --vocab "$vocab" \
               --out "$work/profile-step.json" ;;
    cudnn) part cudnn "${bench[@]}" --shapes "$big" --seq-lens "$seq" "${best[@]}" --fused-head --attention cudnn \
             --out "$work/cudnn-train_step_${big}_cudnn.json" ;;
    flex) part flex "${bench[@]}" --shapes "$big" --seq-lens "$seq" "${best[@]}" --fused-head --attention flex \
            --out "$work/flex-train_step_${big}_flex.json" ;;
    head) part head bash -c "$(printf '%q ' "${bench[@]}") --shapes $big --seq-lens $seq ${best[*]} --out $work/head-train_step_${big}_plain_head.json \
            && $(printf '%q ' "${bench[@]}") --shapes $big --seq-lens $seq ${best[*]} --fused-head --out $work/head-train_step_${big}_fused_head.json" ;;
    headc) part headc "${bench[@]}" --shapes "$big" --seq-lens "$seq" "${best[@]}" --fused-head --fused-head-compile \
             --out "$work/headc-train_step_${big}_fused_head_compiled.json" ;;
    mb) part mb bash -c "$(printf '%q ' "${bench[@]}") --shapes $small --seq-lens $sseq ${best[*]} --micro-batch 1 --out $work/mb-train_step_${small}_mb1.json \
          && $(printf '%q ' "${bench[@]}") --shapes $small --seq-lens $sseq ${best[*]} --micro-batch 2 --out $work/mb-train_step_${small}_mb2.json" ;;
    train) tmo=${NC_TRAIN_TIMEOUT:-240} part train $py -m harness bench-train --shape "$big" --seq-len "$seq" \
             --tokenizer "$tok" --work "$work/tvb" "${best[@]}" --fused-head --out "$work/train-train_vs_bench_${big}.json" ;;
    7B) if [[ "$gpu" == *H200* || -n "${NC_FORCE_7B:-}" ]]; then
          part 7B "${bench[@]}" --shapes "$shape7" --seq-lens "$seq7" --out "$work/7B-train_step_7B.json"
        else skip 7B "not an H200: fp32 master weights + AdamW need about 114 GiB"; fi ;;
    gen) part gen $py -m harness bench-gen $gen --tokenizer "$tok" --out "$work/gen-generation.json" ;;
  esac
done
date -u +"end %FT%TZ"
if grep -q "^FAILED" "$log"; then grep "^FAILED" "$log"; exit 1; fi
exit 0
