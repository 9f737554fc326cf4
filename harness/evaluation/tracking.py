"""An evaluation's metrics sent to experiment trackers (`iwsft eval --log-with ...`): one run per
model, each benchmark's numbers under `<benchmark>/`, at the checkpoint's training step when the
model is a `step-N` checkpoint (so evaluations of a run's checkpoints draw a curve), else step 0."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

from harness.core import trackers


def flat(metrics: dict) -> dict[str, float]:
    """The numbers of one benchmark's metrics: scalars, the interval's ends, pass@k."""
    out = dict(trackers.scalars(metrics, skip=()))
    ci = metrics.get("ci95")
    if ci:
        out["ci95_low"], out["ci95_high"] = float(ci[0]), float(ci[1])
    for j, v in (metrics.get("pass_at_k") or {}).items():
        if v is not None:
            out[f"pass_at_{j}"] = float(v)
    return out


def step_of(model: str) -> int:
    m = re.fullmatch(r"step-0*(\d+)", Path(model).name)
    return int(m.group(1)) if m else 0


def log_results(names: list[str], project: str | None, cfg, results: dict[str, dict]) -> list[str]:
    """Log every evaluated benchmark's numbers; returns the tracker names logged to."""
    from harness.evaluation.store import model_slug

    ran = {b: m for b, m in results.items() if "skipped" not in m}
    if not names or not ran:
        return []
    config = {k: v for k, v in asdict(cfg).items() if k != "gpqa_csv"}     # a local path, not a setting
    started = trackers.start(names, project or trackers.DEFAULT_PROJECT, model_slug(cfg.model), Path(cfg.out) / "tb", config)
    try:
        values = {f"{b}/{k}": v for b, m in ran.items() for k, v in flat(m).items()}
        for t in started:
            t.log(values, step=step_of(cfg.model))
    finally:
        trackers.finish(started)
    return names
