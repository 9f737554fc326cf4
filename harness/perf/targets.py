"""The performance targets, checked against benchmark JSON files (`iwsft bench`, `iwsft bench-gen`).

Prints a markdown table of every training row and a target-by-target verdict (met / missed by how
much / not measured) for docs/performance.md, so the numbers in the docs come from the files.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.core.errors import UserError

# (target, what is compared, threshold): from the performance issue
TARGETS = [
    ("iw-SFT step time <= 1.03x SFT (cached ref, lag-0 q)", "time_vs_sft", 1.03),
    ("iw-SFT peak memory <= 1.02x SFT", "mem_vs_sft", 1.02),
    ("MFU >= 50% at 1.5B / 8k", ("1.5B", 8192), 0.50),
    ("MFU >= 35% at 0.5B / 4k", ("0.5B", 4096), 0.35),
    ("a 32k-token sequence trains at 1.5B", ("1.5B", 32768), None),
    ("fast-path weights equal the textbook path's (max abs dw <= 1e-3)", "fast_vs_simple_max_abs_weight", 1e-3),
    ("budget forcing costs <= 10% extra time per generated token", "time_per_token_vs_plain", 1.10),
]


def load(paths: list[Path], skip_others: bool = False) -> tuple[list[dict], list[dict]]:
    """(training rows, generation results); each training row carries its file's settings.
    skip_others: pass over JSON files that are not benchmark files (a folder's other results) instead of refusing."""
    train, gen = [], []
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read benchmark file {p} ({e}); pass files written by iwsft bench / bench-gen") from None
        if "rows" not in data or "settings" not in data:
            if skip_others:
                continue
            raise UserError(f"{p} is not a benchmark file (no rows/settings); pass files written by iwsft bench / bench-gen")
        # Files from before device_type: the GPU runs are the bf16 ones.
        gpu = data.get("device_type", "cuda" if "bf16" in json.dumps(data["settings"]) else "cpu") != "cpu"
        if data["rows"] and "variant" in data["rows"][0]:
            for r in data["rows"]:
                r = recompute_mfu(r, data["settings"], data.get("device") or "")
                train.append({**r, "_file": Path(p).name, "_device": data.get("device"), "_settings": data["settings"],
                              "_gpu": gpu})
        else:
            gen.append({**data, "_file": Path(p).name, "_gpu": gpu})
    return train, gen


def recompute_mfu(r: dict, settings: dict, device: str) -> dict:
    """A row from a file written before the stated convention (6N over a measured 790 TFLOP/s, no attention:
    it has settings.peak_tflops but no settings.mfu_convention), its MFU recomputed by harness.core.flops's
    convention over the card's spec peak, from its shape, parameters and step time; the old value kept
    beside it as mfu_6n_measured_peak. Rows of the current convention pass unchanged."""
    from harness.core.flops import attention_flops_per_token_per_seq, spec_peak_tflops, step_flops
    from harness.perf.train_bench import SHAPES

    if "mfu_convention" in settings or "peak_tflops" not in settings or r.get("shape") not in SHAPES \
            or not r.get("step_time_s") or not r.get("params"):
        return r
    h, L, nh, _, _ = SHAPES[r["shape"]]
    tied = r["shape"] in ("tiny", "0.5B", "1.5B")      # train_bench.qwen2_model
    dense = r["params"] - (0 if tied else settings.get("vocab", 151936) * h)
    peak = spec_peak_tflops(device) or settings["peak_tflops"]
    tflops = step_flops(6 * dense, attention_flops_per_token_per_seq(L, nh, h // nh), [r["seq_len"]]) / r["step_time_s"] / 1e12
    return {**r, "mfu_6n_measured_peak": r.get("mfu"), "model_tflops_per_s": tflops, "mfu": tflops / peak,
            "_mfu_recomputed": True}


def _options(s: dict) -> str:
    opts = [name for key, name in (("fused_head", "fused head"), ("fused_head_compile", "compiled head"),
                                   ("compile_layers", "compiled")) if s.get(key)]
    if s.get("gradient_checkpointing") is False:
        opts.append("no ckpt")
    if s.get("optimizer", "").endswith("for-each"):
        opts.append("for-each AdamW")
    if s.get("attention", "sdpa") != "sdpa":
        opts.append(f"{s['attention']} attention")
    if s.get("micro_batch", 1) != 1:
        opts.append(f"micro-batch {s['micro_batch']}")
    return ", ".join(opts) or "default"


def training_table(rows: list[dict]) -> str:
    from harness.perf.train_bench import METRIC_COLUMNS, row_cells

    head = ["shape", "seq", "variant", "options", *(h for h, _, _ in METRIC_COLUMNS)]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = row_cells(r)
        out.append("| " + " | ".join([*cells[:3], _options(r["_settings"]), *cells[3:]]) + " |")
    return "\n".join(out)


def verdicts(train: list[dict], gen: list[dict]) -> list[tuple[str, str, str]]:
    """(target, status, evidence) per target. Ratio targets are judged on the worst iw-cached row of
    any configuration (each ratio is against SFT in the same configuration); MFU on the best
    configuration measured for that shape and length."""
    out = []
    # Speed, memory and MFU targets are about the GPU: CPU smoke rows (tiny shapes) do not count for
    # them. The fast-vs-textbook weight check holds on any device.
    smoke = "not measured (CPU smoke rows only)" if (train or gen) else "not measured"
    gpu_train = [r for r in train if r.get("_gpu")]
    gen = [g for g in gen if g.get("_gpu")]
    iw_any = [r for r in train if r["variant"] == "iw-cached" and r.get("status") == "ok"]
    for name, key, thr in TARGETS:
        if key in ("time_vs_sft", "mem_vs_sft", "fast_vs_simple_max_abs_weight"):
            iw = iw_any if key.startswith("fast") else [r for r in iw_any if r.get("_gpu")]
            vals = [(r[key], r) for r in iw if r.get(key) is not None]
            if not vals:
                out.append((name, "not measured" if key.startswith("fast") else smoke, "-"))
                continue
            worst, r = max(vals, key=lambda v: v[0])
            ok = worst <= thr
            fmt = ".1e" if key.startswith("fast") else ".3f"
            out.append((name, "met" if ok else f"missed by {worst - thr:{fmt}}",
                        f"worst {worst:{fmt}} ({r['shape']}/{r['seq_len']}, {_options(r['_settings'])}; {len(vals)} rows)"))
        elif key == "time_per_token_vs_plain":
            vals = [g["rows"][1].get(key) for g in gen if len(g.get("rows", [])) > 1]
            if not vals:
                out.append((name, smoke, "-"))
                continue
            v = max(vals)
            out.append((name, "met" if v <= thr else f"missed by {v - thr:.3f}", f"{v:.3f}x"))
        else:
            shape, seq = key
            cells = [r for r in gpu_train if r["shape"] == shape and r["seq_len"] == seq and r["variant"] in ("sft", "iw-cached")]
            if not cells:
                out.append((name, smoke, "-"))
                continue
            if thr is None:
                ok = [r for r in cells if r.get("status") == "ok"]
                best = min(ok, key=lambda r: r["peak_mem_gib"] or 0) if ok else None
                out.append((name, "met" if ok else "missed (out of memory)",
                            f"{best['variant']}, {_options(best['_settings'])}: {best['peak_mem_gib']:.1f} GiB, "
                            f"{best['step_time_s']:.2f} s/step" if best else ", ".join(str(r.get('status')) for r in cells)))
            else:
                ok = [r for r in cells if r.get("mfu") is not None]
                if not ok:
                    out.append((name, "not measured", "-"))
                    continue
                best = max(ok, key=lambda r: r["mfu"])
                out.append((name, "met" if best["mfu"] >= thr else f"missed by {(thr - best['mfu']) * 100:.1f} points",
                            f"best {best['mfu']:.1%} ({best['variant']}, {_options(best['_settings'])})"))
    return out


def render(train: list[dict], gen: list[dict]) -> str:
    lines = []
    devices = sorted({r["_device"] for r in train if r.get("_device")} | {g.get("device") for g in gen if g.get("device")})
    lines.append(f"Devices: {', '.join(devices) or '-'}")
    from harness.core.flops import CONVENTION

    lines.append(f"MFU: {CONVENTION}"
                 + (" (rows of files written before it: recomputed from their step times)" if any(r.get("_mfu_recomputed") for r in train) else ""))
    lines.append("")
    lines.append("| target | status | evidence |")
    lines.append("|---|---|---|")
    for name, status, ev in verdicts(train, gen):
        lines.append(f"| {name} | {status} | {ev} |")
    if train:
        lines += ["", training_table(train)]
    for g in gen:
        s = g["settings"]
        lines += ["", f"Generation ({g['_file']}): {s['shape']} {s['dtype']}, {s['prompts']} prompts x {s['new_tokens']} new tokens",
                  "", "| mode | rounds | s | generated | tok/s | time/token vs plain |", "|---|---|---|---|---|---|"]
        for r in g["rows"]:
            lines.append(f"| {r['mode']} | {r['rounds']} | {r['time_s']:.2f} | {r['generated_tokens']:,} | {r['tokens_per_s']:,.0f} "
                         f"| {r.get('time_per_token_vs_plain', 1.0):.3f} |")
    return "\n".join(lines)
