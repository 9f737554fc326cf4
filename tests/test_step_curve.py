"""The accuracy-vs-step curve: >= 6 points per recipe in the tiny preset, each with its interval, on a
fixed subset of held-out clusters; a title from the preset run, integer step ticks, recipes apart."""

import json
from types import SimpleNamespace

from rich.console import Console

from harness.paper import pipeline
from harness.paper.suite import load_suite


def _fake_run(ids, right):
    outcomes = {q: [q in right] for q in ids}
    return SimpleNamespace(benchmark="arith", outcomes=outcomes, scores={q: float(o[0]) for q, o in outcomes.items()})


def _trained(root, steps, every):
    (root / "final").mkdir(parents=True)
    for s in range(every, steps, every):
        (root / "checkpoints" / f"step-{s:06d}").mkdir(parents=True)
    (root / "config.yaml").write_text(f"save_every: {every}\n")
    (root / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, steps + 1)))
    return root / "final"


def test_tiny_curve_has_six_points_with_intervals_on_every_cluster(tmp_path):
    from harness.evaluation.benchmarks import clusters_for
    from harness.training.config import load_recipe

    suite = load_suite("tiny")
    limit, ids, words = pipeline.curve_subset(suite.step_curve)
    assert limit is None and len(ids) == 28 and len(set(clusters_for("arith", ids).values())) == 28
    assert "each of the 28 clusters" in words
    # under reproduce --limit N the subset lies within the first N problems, which Table 1 evaluated:
    # the base and final models are not loaded again for the curve (test_pipeline counts the loads)
    from harness.evaluation.benchmarks import load_benchmark

    for n in (2, 40):
        _, sub, _ = pipeline.curve_subset({**suite.step_curve, "limit": n})
        assert sub and set(sub) <= {p.id for p in load_benchmark("arith", limit=n)}
    asked = []

    def run(model, bench, lim, ids=None):
        asked.append((model, bench, lim, ids))
        return _fake_run(ids, set(ids[: len(asked)]))

    finals = {}
    for name in suite.step_curve["recipes"]:
        cfg = load_recipe(suite.recipe_path(name))
        steps = -(-145 // cfg.global_batch_size)        # the shipped 145 rows, one epoch
        finals[name] = _trained(tmp_path / name, steps, cfg.save_every)
    curve = pipeline.step_curve(suite, SimpleNamespace(run=run), finals, _fake_run(ids, set()), Console(file=None))
    assert curve["preset"] == "tiny" and curve["subset"] == words
    for name, pts in curve["curves"].items():
        assert len(pts) >= 6, (name, [p["step"] for p in pts])
        for p in pts:
            lo, hi = p["ci95"]
            assert lo <= p["accuracy"] <= hi and p["clusters"] == 28 and p["n"] == 28
    assert all(a[3] == ids for a in asked)                     # every checkpoint on the same fixed subset


def test_plot_titles_the_preset_with_integer_ticks_and_recipes_apart(tmp_path, monkeypatch):
    import matplotlib.figure

    figs = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: figs.append(self))
    pts = [{"step": s, "accuracy": 0.5, "n": 28, "clusters": 28, "ci95": [0.3, 0.7]} for s in (0, 4, 8, 12, 16, 19)]
    curve = {"preset": "evidence", "benchmark": "arith", "limit": None, "subset": "a fixed subset",
             "curves": {"a": pts, "b": pts}}
    pipeline.plot_step_curve(curve, tmp_path / "x.png")
    (ax,) = figs[0].axes
    assert "preset evidence" in ax.get_title()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert all(float(t).is_integer() for t in ticks)
    assert list(ax.get_xticks()) == [0, 4, 8, 12, 16, 19]                                   # where the checkpoints are
    lines = [ln for ln in ax.get_lines() if ln.get_linestyle() != "None"]     # the curves, not the error-bar caps
    assert len(lines) == 2 and list(lines[0].get_xdata()) != list(lines[1].get_xdata())      # identical curves both show
    assert lines[0].get_linestyle() != lines[1].get_linestyle()
    assert len(ax.collections) >= 2                                                         # error bars
