"""Reading finished evaluation runs back: metrics and per-problem scores from their directories.

An evaluation run directory (written by harness.evaluate) holds settings.json, samples.jsonl and
metrics.json. `find_runs` accepts either such a directory or a model-level folder above it
(OUT/<model-slug>/), and returns the newest run per benchmark.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError


@dataclass
class Run:
    path: Path
    benchmark: str
    metrics: dict
    scores: dict[str, float]          # problem id -> fraction of samples correct
    thinking: dict[str, float]        # problem id -> mean thinking tokens


def load_run(path: Path) -> Run:
    path = Path(path)
    mfile = path / "metrics.json"
    if not mfile.is_file():
        raise UserError(f"{path} has no metrics.json: not a finished evaluation run (re-run its `iwsft eval` to finish it)")
    metrics = json.loads(mfile.read_text())
    ids = metrics.get("problem_ids") or (metrics.get("subset") or {}).get("ids")
    subset = set(ids) if ids is not None else None
    per, think = defaultdict(list), defaultdict(list)
    with open(path / "samples.jsonl", encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue        # a cut trailing line; the runner drops it on its next pass
            if subset is not None and row["problem_id"] not in subset:
                continue
            per[row["problem_id"]].append(bool(row["correct"]))
            think[row["problem_id"]].append(float(row.get("thinking_tokens") or 0))
    keys = [i for i in ids if i in per] if ids is not None else list(per)
    scores = {k: sum(per[k]) / len(per[k]) for k in keys}
    thinking = {k: sum(think[k]) / len(think[k]) for k in keys}
    return Run(path, metrics.get("benchmark") or path.parent.name, metrics, scores, thinking)


def find_runs(path: Path) -> dict[str, Run]:
    """benchmark -> newest finished run under `path` (a run dir or a model-level folder)."""
    path = Path(path)
    if (path / "metrics.json").is_file():
        r = load_run(path)
        return {r.benchmark: r}
    found = sorted(path.glob("*/*/metrics.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no finished evaluation runs under {path}; give an `iwsft eval --out` folder or a run directory")
    out = {}
    for m in found:
        r = load_run(m.parent)
        out[r.benchmark] = r
    return out
