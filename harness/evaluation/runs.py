"""Reading finished evaluation runs back: metrics and per-problem scores from their directories.

An evaluation run directory (written by harness.evaluation.runner) holds settings.json, samples.jsonl and
metrics.json. `find_runs` accepts such a directory, a model-level folder above it
(OUT/<model-slug>/) or an eval output folder with one model, and returns the run per benchmark.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import UserError


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
    """benchmark -> its finished run under `path`: a run folder, a model folder (OUT/<model-slug>/)
    or an `iwsft eval --out` folder holding one model. Several runs of one benchmark (other
    settings) or several models are refused: which one is meant is the user's call, not ours."""
    path = Path(path)
    if (path / "metrics.json").is_file():
        r = load_run(path)
        return {r.benchmark: r}
    found = sorted(path.glob("*/*/metrics.json"))
    if not found:
        models = sorted({m.parents[2] for m in path.glob("*/*/*/metrics.json")})
        if len(models) == 1:
            return find_runs(models[0])
        if models:
            raise UserError(f"{path} holds evaluations of {len(models)} models ({', '.join(m.name for m in models[:4])}); "
                            f"give one model's folder, e.g. {models[0]}")
        raise UserError(f"no finished evaluation runs under {path}; give an `iwsft eval --out` folder, a model folder "
                        "in it, or a run folder")
    by_bench: dict[str, list[Run]] = defaultdict(list)
    for m in found:
        r = load_run(m.parent)
        by_bench[r.benchmark].append(r)
    for bench, rs in by_bench.items():
        if len(rs) > 1:
            raise UserError(f"{path} holds {len(rs)} finished {bench} runs with different settings "
                            f"({', '.join(differing_settings([r.path for r in rs])) or 'see their settings.json'}); give one run folder, e.g. {rs[0].path}")
    return {b: rs[0] for b, rs in by_bench.items()}


def differing_settings(run_dirs: list[Path], ignore: tuple[str, ...] = ()) -> list[str]:
    """The settings.json keys whose values differ between the runs (`ignore` left out)."""
    settings = []
    for d in run_dirs:
        try:
            settings.append(json.loads((Path(d) / "settings.json").read_text()))
        except (OSError, json.JSONDecodeError):
            settings.append({})
    return sorted(k for k in {k for s in settings for k in s} - set(ignore)
                  if len({json.dumps(x.get(k), sort_keys=True) for x in settings}) > 1)
