"""Designs and pilots for harness.core.power, read from evaluation runs and Table 1 reports: the
report's minimum-detectable-difference line and the inputs of `iwsft power`."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from harness.core import power
from harness.core.errors import UserError


@dataclass
class Pilot:
    """What a finished run says about one benchmark's design and noise."""
    benchmark: str
    clusters: int
    items_per_cluster: float
    accuracy: float
    icc: float
    seeds: int                         # seeds per method in the pilot
    observed_sd: float | None          # pooled SD of accuracy between seeds (None with one seed)
    methods: list[str]
    discordance: float | None = None   # mean E[(score_B - score_A)^2] per item over the paired checkpoints
    pair_icc: float | None = None      # intra-cluster correlation of the items' paired differences
    seed_diffs: list[float] | None = None   # per-seed differences B - A (the report's test's data)
    pair: tuple[str, str] | None = None     # (A, B) whose per-seed differences the pilot measured

    @property
    def observed_diff_sd(self) -> float | None:
        return statistics.stdev(self.seed_diffs) if self.seed_diffs and len(self.seed_diffs) >= 2 else None

    def design(self, alpha: float = power.ALPHA) -> power.Design:
        # at 0% or 100% the binomial variance vanishes and any difference would look detectable:
        # move the accuracy half an item inward (the usual continuity correction); likewise a pilot
        # whose checkpoints agree on every item plans as if one item disagreed
        n = self.clusters * self.items_per_cluster
        p = min(max(self.accuracy, 0.5 / n), 1 - 0.5 / n)
        one = power.Design(self.clusters, self.items_per_cluster, max(1, self.seeds), p, self.icc, alpha=alpha)
        seed_sd = (0.0 if self.observed_sd is None else
                   power.noise_sd_from_pilot(self.observed_sd, power.sampling_var_of_accuracy(one)))
        d = one.with_(seed_sd=seed_sd)
        if self.discordance is None:
            return d
        d = d.with_(discordance=max(self.discordance, 1 / n), icc=self.icc if self.pair_icc is None else self.pair_icc)
        if self.observed_diff_sd is not None:
            mean = statistics.fmean(self.seed_diffs)
            d = d.with_(diff_sd=power.noise_sd_from_pilot(self.observed_diff_sd, d.sampling_var(mean)))
        elif self.observed_sd is None:
            d = d.with_(diff_sd=0.0)       # one seed: test sampling only (the report says: a lower bound)
        return d


def _groups(benchmark: str, ids: list[str]) -> list:
    """Each problem's cluster (its own id where the benchmark has no clusters)."""
    from harness.evaluation.benchmarks import clusters_for

    keys = clusters_for(benchmark, ids) or {q: q for q in ids}
    return [keys[q] for q in ids]


def run_shape(run) -> tuple[int, float, float]:
    """(clusters, items per cluster, icc) of one evaluation run (harness.evaluation.store.Run)."""
    ids = list(run.scores)
    if not ids:
        raise UserError(f"{run.path} has no scored problem; a pilot needs a finished evaluation")
    groups = _groups(run.benchmark, ids)
    k = len(set(groups))
    return k, len(ids) / k, power.icc_anova([run.scores[q] for q in ids], groups)


def pilot_from_runs(benchmark: str, by_method: dict[str, list], pair: tuple[str, str] | None = None) -> Pilot:
    """A pilot from each method's runs (one Run per training seed) on one benchmark; `pair` (A, B) names
    the two methods whose per-seed differences B - A are measured (default: the first two)."""
    if pair is not None:
        missing = [m for m in pair if m not in by_method]
        if missing:
            raise UserError(f"--pair names {', '.join(missing)}, not a trained row of the pilot on {benchmark}; "
                            f"it has {', '.join(by_method)}")
    runs = [r for rs in by_method.values() for r in rs]
    shapes = [run_shape(r) for r in runs]
    accs = {m: [sum(r.scores.values()) / len(r.scores) for r in rs] for m, rs in by_method.items()}
    multi = [a for a in accs.values() if len(a) >= 2]
    # pooled within-method variance over seeds (each method's own mean removed)
    dof = sum(len(a) - 1 for a in multi)
    sd = (sum((len(a) - 1) * statistics.variance(a) for a in multi) / dof) ** 0.5 if dof else None
    pilot = Pilot(benchmark=benchmark, clusters=round(statistics.fmean(s[0] for s in shapes)),
                  items_per_cluster=statistics.fmean(s[1] for s in shapes),
                  accuracy=statistics.fmean(x for a in accs.values() for x in a),
                  icc=statistics.fmean(s[2] for s in shapes), seeds=min(len(a) for a in accs.values()),
                  observed_sd=sd, methods=list(by_method))
    # the report's pairs: seed i of the first method with seed i of the second; one method alone:
    # its seeds with each other (how much two checkpoints disagree, no method difference to see)
    names = list(pair) if pair is not None else list(by_method)[:2]
    lists = [by_method[m] for m in names]
    pairs = (list(zip(lists[0], lists[1])) if len(lists) >= 2 else
             [(x, y) for i, x in enumerate(lists[0]) for y in lists[0][i + 1:]])
    stats = [s for s in (_paired(benchmark, a, b) for a, b in pairs) if s]
    if stats:
        pilot.discordance = statistics.fmean(s[1] for s in stats)
        pilot.pair_icc = statistics.fmean(s[2] for s in stats)
        if len(lists) >= 2:
            pilot.seed_diffs = [s[0] for s in stats]
            pilot.pair = (names[0], names[1])
    return pilot


def _paired(benchmark: str, a, b) -> tuple[float, float, float] | None:
    """(mean difference B - A, mean squared per-item difference, icc of the per-item differences) of
    two runs on their common problems; None when they share none."""
    ids = sorted(set(a.scores) & set(b.scores))
    if not ids:
        return None
    y = [float(b.scores[q]) - float(a.scores[q]) for q in ids]
    return statistics.fmean(y), statistics.fmean(v * v for v in y), power.icc_anova(y, _groups(benchmark, ids))


def _first_clustered(benches: list[str]) -> str:
    """A pilot's default benchmark: the first whose problems come in clusters (e.g. arith), else the first."""
    from harness.evaluation.benchmarks import clusters_for

    return next((b for b in benches if clusters_for(b, ["x"]) is not None), benches[0])


def pilot_from_report(path: Path, benchmark: str | None = None, pair: tuple[str, str] | None = None) -> Pilot:
    """A pilot from a Table 1 report (table1.json, or the folder holding it) of a `--seeds N` run:
    the trained rows' per-seed runs on `benchmark` (default: the first benchmark with clusters)."""
    from harness.evaluation.store import load_run

    path = Path(path)
    f = path / "table1.json" if path.is_dir() else path
    try:
        report = json.loads(f.read_text())
        rows = report["rows"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read a Table 1 report from {path} ({type(e).__name__}); give a reports folder or its "
                        "table1.json written by `iwsft reproduce-table1 --seeds N`") from None
    trained = [r for r in rows if r.get("model") != "base"]
    benches = [b for b in dict.fromkeys(b for r in trained for b in r.get("benchmarks", {}))]
    if not benches:
        raise UserError(f"{f} has no trained row to take a pilot from; run `iwsft reproduce-table1 --seeds N` first")
    if benchmark is None:
        benchmark = _first_clustered(benches)
    if benchmark not in benches:
        raise UserError(f"{f} has no benchmark {benchmark!r}; it has {', '.join(benches)} (--benchmark)")
    by_method = {}
    for r in trained:
        c = r["benchmarks"].get(benchmark)
        if not c:
            continue
        cells = c.get("per_seed") or [c]
        try:
            by_method[r["model"]] = [load_run(Path(x["run_dir"])) for x in cells]
        except (KeyError, UserError) as e:
            raise UserError(f"{f}: the run folders of {r['model']} on {benchmark} are not readable here ({e}); run "
                            "`iwsft power` where the report was made, or give the design with --clusters, "
                            "--items-per-cluster, --icc and --seed-sd") from None
    return pilot_from_runs(benchmark, by_method, pair)


def pilot_from_run_dirs(dirs: list[str], benchmark: str | None = None) -> Pilot:
    """A pilot from one method's evaluation folders, one per training seed: run folders, or model
    folders of `iwsft eval --out` (then `benchmark` picks the run in each when they hold several)."""
    from harness.evaluation.store import find_runs

    found = [find_runs(Path(d)) for d in dirs]
    common = [b for b in found[0] if all(b in f for f in found[1:])]
    if benchmark is None:
        if not common:
            raise UserError(f"--pilot-runs share no benchmark ({'; '.join(', '.join(f) for f in found)}); give one "
                            "benchmark's run folders")
        benchmark = _first_clustered(common)
    elif benchmark not in common:
        raise UserError(f"--benchmark {benchmark} is not in every --pilot-runs folder (all have: {', '.join(common) or 'none'})")
    return pilot_from_runs(benchmark, {"method": [f[benchmark] for f in found]})


def mdd_lines(models: dict[str, list[dict]], alpha: float = power.ALPHA) -> list[str]:
    """The report's line: for each benchmark, the smallest difference between two methods that this
    report's own design (clusters, items, seeds per arm, the observed seed noise) detects with 80%
    power. models: row name -> one {benchmark: Run} per seed (as build_table takes)."""
    trained = {m: seeds for m, seeds in models.items() if m != "base"}
    benches = list(dict.fromkeys(b for seeds in trained.values() for s in seeds for b in s))
    parts = []
    seeds = max((len(s) for s in trained.values()), default=0)
    for b in benches:
        by_method = {m: [s[b] for s in ss if b in s and s[b].scores] for m, ss in trained.items()}
        by_method = {m: rs for m, rs in by_method.items() if rs}
        if not by_method:
            continue
        p = pilot_from_runs(b, by_method)
        d = p.design(alpha)
        shape = (f"{d.clusters} cluster{'s' if d.clusters != 1 else ''} x {d.items_per_cluster:.3g} "
                 f"item{'s' if d.items_per_cluster != 1 else ''} each, icc {d.icc:.2f}")
        parts.append(f"{b} {100 * power.mdd(d):.1f} points ({shape}"
                     + (f", discordance {100 * d.disc():.1f}%" if p.discordance is not None else "")
                     + (f", per-seed difference SD {100 * d.pair_sd():.1f}" if seeds >= 2 else "") + ")")
    if not parts:
        return []
    how = (f"{seeds} seeds per method, the paired t over seeds printed above ({seeds - 1} df)" if seeds >= 2 else
           "1 seed per method: test-sampling noise only (seed-to-seed noise unknown), so a lower bound")
    return [f"Minimum detectable difference between two methods (80% power, alpha {alpha:g}; {how}; "
            f"`iwsft power` for other designs): " + "; ".join(parts) + "."]
