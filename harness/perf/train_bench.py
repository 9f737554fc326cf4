"""Training-step benchmark: what iw-SFT costs over SFT, per layout, at real model shapes.

Variants (one optimizer step each, random-init Qwen2.5 shapes, the trainer's code path:
`batch_logprobs` + `iw_objective`, fp32 master weights with bf16 autocast on GPU):

- sft             policy forward/backward, w = 1
- iw-cached       + reference log-probs from a cached tensor, q = the policy's own detached
                  log-probs (lag 0): what the recipes run
- iw-periodic     + a resident q copy, one no-grad forward per step (Algorithm 1, lag Q)
- naive-ref       the released code's layout: a resident reference model, forward every step
- naive-ref-q     the paper's Algorithm 1 done naively: resident reference AND resident q

Prints a rich table and writes JSON (device, versions, date) for docs/performance.md.
"""

from __future__ import annotations

import copy
import gc
import datetime as dt
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from harness.core.flops import CONVENTION, attn_coeff_of, dense_params, matmul_tflops, spec_peak_tflops, step_flops
from harness.training.attention import attention_context
from harness.training.batching import Batch, batch_logprobs, compile_decoder_layers, enable_checkpointing
from harness.training.objective import iw_objective, preset
from harness.training.optim import adamw

SHAPES = {
    # name: (hidden, layers, heads, kv_heads, intermediate) of Qwen2.5 (vocab 151936, tied for <=1.5B)
    "tiny": (64, 2, 4, 2, 128),
    "0.5B": (896, 24, 14, 2, 4864),
    "1.5B": (1536, 28, 12, 2, 8960),
    "7B": (3584, 28, 28, 4, 18944),
}
VARIANTS = ("sft", "iw-cached", "iw-periodic", "naive-ref", "naive-ref-q")
# sdpa: torch picks (flash on Hopper); cudnn: SDPA restricted to cuDNN's kernel (CUDA only); flex: FlexAttention
# (transformers' flex_attention: block masks, no [T x T] mask): harness/training/attention.py, the trainer's
# `attention` key's definition.


def check_attention(attention: str, device) -> None:
    """UserError for an attention kernel this device cannot train with."""
    from harness.training.attention import check_device

    check_device(attention, device, "--attention")


def qwen2_model(shape: str, vocab: int, device, max_positions: int = 131072, attention: str = "sdpa"):
    """A random-init Qwen2.5 model of `shape` (float32; SDPA attention, or FlexAttention), built directly on `device`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    h, L, nh, kv, inter = SHAPES[shape]
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=h, num_hidden_layers=L, num_attention_heads=nh,
                      num_key_value_heads=kv, intermediate_size=inter, max_position_embeddings=max_positions,
                      tie_word_embeddings=shape in ("tiny", "0.5B", "1.5B"),
                      attn_implementation="flex_attention" if attention == "flex" else "sdpa")
    with torch.device(device):
        return Qwen2ForCausalLM(cfg)


def run_header(device) -> dict:
    """Date, device and versions: the part of every benchmark JSON that says where it was measured."""
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "device_type": device.type,
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                     "python": platform.python_version()},
    }


def sync(device) -> None:
    """Wait for queued GPU work, so wall-clock timers measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_model(shape: str, vocab: int, device, gradient_checkpointing: bool = True, compile_layers: bool = False,
               attention: str = "sdpa"):
    model = qwen2_model(shape, vocab, device, attention=attention)
    model.config.use_cache = False
    if gradient_checkpointing:
        enable_checkpointing(model)
    if compile_layers:   # regional compilation: one compiled graph reused by every decoder layer
        compile_decoder_layers(model)
    model.train()
    return model


def _batch(seq_len: int, vocab: int, device, seed: int = 0, rows: int = 1) -> Batch:
    """`rows` full-length rows of random tokens, each with a prompt of a tenth that carries no loss."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, seq_len), generator=g)
    att = torch.ones_like(ids)
    mask = torch.ones(rows, seq_len - 1, dtype=torch.bool)
    mask[:, : seq_len // 10] = False          # a prompt that carries no loss
    return Batch(ids, att, mask, list(range(rows)), [seq_len] * rows).to(device)


def run_variant(variant: str, model, batch: Batch, steps: int, warmup: int, autocast, fused_head: bool = False,
                fused_optimizer: bool = True, compiled: bool = False, fused_head_compile: bool = False) -> dict:
    lp = lambda m: batch_logprobs(m, batch, fused_head, fused_head_compile)
    device = batch.input_ids.device
    spec = preset("sft" if variant == "sft" else "iw-sft")
    opt = adamw(model.parameters(), lr=1e-6, fused=fused_optimizer)
    ref_model = q_model = None
    if variant in ("naive-ref", "naive-ref-q"):
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    if variant in ("iw-periodic", "naive-ref-q"):
        q_model = copy.deepcopy(model).eval().requires_grad_(False)
    with torch.set_grad_enabled(compiled), autocast():   # compiled: the training graph, as the trainer's cache
        cached_ref = lp(model).detach() if variant in ("iw-cached", "iw-periodic") else None
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # what is held before the first step (weights; and what the reference forward may have left behind)
    resident = torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None
    times, w0 = [], None
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with autocast():
            pol = lp(model)
            q = ref = None
            if variant != "sft":
                if q_model is not None:
                    with torch.no_grad():
                        q = lp(q_model)
                else:
                    q = pol.detach()
                if ref_model is not None:
                    with torch.no_grad():
                        ref = lp(ref_model)
                else:
                    ref = cached_ref
            out = iw_objective(pol, q, ref, batch.loss_mask, spec, batch_id=i)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i == 0:
            w0 = float(out.seq_weights[0])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    del opt, ref_model, q_model
    out = {"step_time_s": statistics.median(times), "peak_mem_gib": peak, "resident_gib": resident, "w_step0": w0}
    if variant == "iw-cached":
        out.update(_reference_cost(lp, model, batch, steps, autocast))
        out.update(_fast_vs_simple(lp, model, batch, cached_ref, autocast))
    return out


def _reference_cost(lp, model, batch: Batch, steps: int, autocast) -> dict:
    """The reference cache costs one no-grad forward per example, once: as a fraction of one
    epoch (one training step per example at micro-batch 1) it is forward time / step time."""
    device = batch.input_ids.device
    times = []
    with torch.no_grad(), autocast():
        for _ in range(max(steps, 2)):
            sync(device)
            t0 = time.perf_counter()
            lp(model)
            sync(device)
            times.append(time.perf_counter() - t0)
    return {"ref_forward_s": statistics.median(times[1:])}


def _fast_vs_simple(lp, model, batch: Batch, ref: torch.Tensor, autocast) -> dict:
    """The weights of the fast path (the bench's: chunked float32 log-softmax, or the fused head) against the textbook one
    (log_softmax of the whole float32 logits) on the same batch, after the timed steps moved the
    policy away from the reference (so the weights are not trivially 1)."""
    spec = preset("iw-sft")
    try:
        with torch.no_grad(), autocast():
            fast = lp(model)
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits[:, :-1]
            tgt = batch.input_ids[:, 1:]
            simple = torch.log_softmax(logits.float(), dim=-1).gather(-1, tgt[..., None]).squeeze(-1)
            del logits
            wf = iw_objective(fast, fast, ref, batch.loss_mask, spec).seq_weights
            ws = iw_objective(simple, simple, ref, batch.loss_mask, spec).seq_weights
        return {"fast_vs_simple_max_abs_logprob": float((fast - simple)[batch.loss_mask].abs().max()),
                "fast_vs_simple_max_abs_weight": float((wf - ws).abs().max()), "weight_after_steps": float(wf[0])}
    except torch.OutOfMemoryError:      # the simple path needs the whole float32 logits
        return {"fast_vs_simple_max_abs_weight": None, "fast_vs_simple_note": "simple path out of memory"}


def bench_train_step(shapes: list[str], seq_lens: list[int], variants: list[str], steps: int = 5, warmup: int = 2,
                     vocab: int = 151936, peak_tflops: float | None = None, device: str | None = None,
                     gradient_checkpointing: bool = True, fused_head: bool = False, compile_layers: bool = False,
                     fused_optimizer: bool = True, attention: str = "sdpa", micro_batch: int = 1, on_row=None,
                     fused_head_compile: bool = False) -> dict:
    """`on_row(result_so_far)` after each cell, so a run cut short by a time limit keeps its rows.
    fused_head_compile (needs fused_head): the fused head's chunk math through torch.compile."""
    if fused_head_compile and not fused_head:
        from harness.core.errors import UserError

        raise UserError("--fused-head-compile compiles the fused head's chunks; add --fused-head")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_attention(attention, device)
    use_bf16 = device.type == "cuda"
    header = run_header(device)
    given = peak_tflops is not None
    peak_tflops = peak_tflops if given else spec_peak_tflops(header["device"])

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    rows = []
    result = {
        **header,
        "settings": {"steps": steps, "warmup": warmup, "vocab": vocab, "peak_tflops": peak_tflops,
                     "peak_source": "given" if given else ("dense bf16 spec of the card" if peak_tflops else "unknown card"),
                     # a measured bf16 matmul rate, beside the spec peak (MFU divides by the peak)
                     "matmul_tflops": matmul_tflops(device) if device.type == "cuda" else None,
                     "mfu_convention": CONVENTION,
                     "precision": "fp32 master weights, bf16 autocast" if use_bf16 else "fp32",
                     "gradient_checkpointing": gradient_checkpointing, "fused_head": fused_head, "fused_head_compile": fused_head_compile,
                     "compile_layers": compile_layers, "attention": attention,
                     "optimizer": "AdamW, fused" if fused_optimizer else "AdamW, for-each",
                     "micro_batch": micro_batch},
        "rows": rows,
    }
    for shape in shapes:
        for T in seq_lens:
            base = None
            for variant in variants:
                torch.manual_seed(0)
                model = make_model(shape, vocab, device, gradient_checkpointing, compile_layers, attention)
                n_params = sum(p.numel() for p in model.parameters())
                flops = step_flops(6 * dense_params(model), attn_coeff_of(model.config), [T] * micro_batch)
                batch = _batch(T, vocab, device, rows=micro_batch)
                try:
                    with attention_context(attention):
                        r = run_variant(variant, model, batch, steps, warmup, autocast, fused_head, fused_optimizer, compile_layers,
                                        fused_head_compile)
                    r["status"] = "ok"
                except torch.OutOfMemoryError:
                    r = {"status": "oom", "step_time_s": None, "peak_mem_gib": None}
                del model
                if compile_layers or fused_head_compile:   # dynamo's caches keep the last compiled graphs (and weights) alive
                    torch._dynamo.reset()
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if r["step_time_s"]:
                    r["tokens_per_s"] = T * micro_batch / r["step_time_s"]
                    r["model_tflops_per_s"] = flops / r["step_time_s"] / 1e12
                    r["mfu"] = r["model_tflops_per_s"] / peak_tflops if peak_tflops else None
                if r.get("ref_forward_s") and r.get("step_time_s"):
                    r["ref_cache_epoch_fraction"] = r["ref_forward_s"] / r["step_time_s"]
                if variant == "sft":
                    base = r
                if base and base.get("step_time_s") and r.get("step_time_s"):
                    r["time_vs_sft"] = r["step_time_s"] / base["step_time_s"]
                    if base.get("peak_mem_gib"):
                        r["mem_vs_sft"] = r["peak_mem_gib"] / base["peak_mem_gib"]
                rows.append({"shape": shape, "params": n_params, "seq_len": T, "variant": variant, **r})
                if on_row is not None:
                    on_row(result)
    return result


# (header, row key, format). Ratios are to the SFT row of the same shape and length; w step 0 must
# be 1; ref cache / epoch: the one-off reference cache as a fraction of one epoch; max abs dw: the
# largest |weight of the fast path - weight of the textbook path|.
METRIC_COLUMNS = (("s/step", "step_time_s", ".3f"), ("tok/s", "tokens_per_s", ",.0f"), ("MFU", "mfu", ".1%"),
                  ("peak GiB", "peak_mem_gib", ".1f"), ("time x SFT", "time_vs_sft", ".3f"),
                  ("mem x SFT", "mem_vs_sft", ".3f"), ("w step 0", "w_step0", ".4f"),
                  ("ref cache / epoch", "ref_cache_epoch_fraction", ".2f"),
                  ("max abs dw", "fast_vs_simple_max_abs_weight", ".1e"))


def row_cells(r: dict) -> list[str]:
    """shape, seq, variant (with its status when not ok), then METRIC_COLUMNS, formatted ("-" if absent)."""
    variant = r["variant"] + ("" if r.get("status") == "ok" else f" ({r.get('status')})")
    return [r["shape"], str(r["seq_len"]), variant] + [
        "-" if r.get(key) is None else format(r[key], fmt) for _, key, fmt in METRIC_COLUMNS]


def print_table(result: dict, console) -> None:
    from rich.table import Table

    t = Table(title=f"One training step on {result['device']} ({result['settings']['precision']})", title_justify="left")
    for col in ("shape", "seq", "variant", *(h for h, _, _ in METRIC_COLUMNS)):
        t.add_column(col, justify="left" if col in ("shape", "variant") else "right")
    for r in result["rows"]:
        t.add_row(*row_cells(r))
    console.print(t)
    st = result["settings"]
    rate = f"; measured bf16 matmul {st['matmul_tflops']:.0f} TFLOP/s" if st.get("matmul_tflops") else ""
    console.print(f"MFU: {st.get('mfu_convention')}; peak {st.get('peak_tflops') or '-'} TFLOP/s "
                  f"({st.get('peak_source')}){rate}", markup=False, highlight=False)


def write(result: dict, path: Path) -> None:
    from harness.core.io import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
