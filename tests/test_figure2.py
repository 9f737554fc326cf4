"""Figure 2 carries its uncertainty: each point a cluster-aware interval and its Waits used, a paired
test between the checkpoints at each cell, the budget mode (a suite key) and the deviations."""

import hashlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_promises import EchoEngine, _hf_folder  # noqa: E402

SWEEP = """budget_sweep:
  benchmarks: [arith]
  limit: 24
  budget_mode: {mode}
  y_floor: 10
  cells:
    - {{thinking_budget: 8, wait: 0}}
    - {{thinking_budget: 32, wait: 2}}
"""


class WaitEcho(EchoEngine):
    """EchoEngine that spends some of its Waits (by a hash of the problem) and hits the cap under 16 tokens."""

    modes: list[str] = []

    def generate(self, cfg, prompts, budget, seeds, on_result):
        WaitEcho.modes.append(cfg.budget_mode)

        def wrapped(j, res):
            p = self._problems[tuple(prompts[j])]
            used = min(cfg.wait, int(hashlib.sha256(p.id.encode()).hexdigest(), 16) % 3)
            on_result(j, SimpleNamespace(**{**res.__dict__, "num_waits_used": used, "hit_cap": int(budget) < 16}))

        super().generate(cfg, prompts, budget, seeds, wrapped)


@pytest.fixture
def wait_echo(monkeypatch, tmp_path):
    import harness.evaluation.runner
    import harness.paper.evaluations

    WaitEcho.calls, WaitEcho.modes = [], []
    monkeypatch.setattr(harness.paper.evaluations, "Engine", WaitEcho)
    monkeypatch.setattr(harness.evaluation.runner, "Engine", WaitEcho)
    monkeypatch.chdir(tmp_path)
    return WaitEcho


def _suite(tmp_path, mode="s1-compat", extra=""):
    from harness.paper.suite import suite_path

    text = suite_path("tiny").read_text()
    f = tmp_path / "sweep.yaml"
    f.write_text(text[: text.index("budget_sweep:")] + SWEEP.format(mode=mode) + extra)
    return f


def test_points_have_intervals_waits_and_cell_tests(tmp_path, wait_echo):
    a, b = _hf_folder(tmp_path / "ckpt" / "a"), _hf_folder(tmp_path / "ckpt" / "b")
    assert main(["budget-sweep", f"a={a}", f"b={b}", "--preset", str(_suite(tmp_path)), "--out", "rep"]) == 0
    fig = json.loads((tmp_path / "rep" / "figure2.json").read_text())
    assert fig["budget_mode"] == "s1-compat" and set(wait_echo.modes) == {"s1-compat"}    # the suite chose, the runs ran it
    assert any("s1-compat" in d for d in fig["deviations"]) and any("first 24" in d for d in fig["deviations"])
    from harness.evaluation.benchmarks import clusters_for
    from harness.evaluation.metrics import accuracy_interval

    for name in ("a", "b"):
        cap, wait = fig["models"][name]["arith"]
        for p in (cap, wait):
            run_dir = next((tmp_path / "runs" / "sweep").rglob("metrics.json")).parent   # any run: ids are the same
            ids = json.loads((run_dir / "metrics.json").read_text())["problem_ids"]
            assert p["n"] == 24 and p["clusters"] == len(set(clusters_for("arith", ids).values())) < 24
            assert p["ci95"][0] <= p["accuracy"] <= p["ci95"][1] and "clusters" in p["ci_method"]
        assert cap["forcing"] == "cap-only" and cap["waits_used"]["mean"] == 0 and cap["waits_used"]["share_capped"] == 1
        assert wait["forcing"] == "wait-extended" and 0 < wait["waits_used"]["mean"] <= 2
    # the interval is the reports' own (recomputed from the samples of one point)
    from harness.evaluation.store import load_run

    runs = [load_run(m.parent) for m in (tmp_path / "runs" / "sweep").rglob("metrics.json")]
    some = next(r for r in runs if len(r.scores) == 24)
    ci, _ = accuracy_interval(list(some.outcomes.values()), clusters_for("arith", list(some.outcomes)))
    assert list(ci) in [p["ci95"] for per in fig["models"].values() for p in per["arith"]]
    tests = fig["paired"]
    assert [(t["a"], t["b"], t["thinking_budget"], t["wait"]) for t in tests] == [("a", "b", 8, 0), ("a", "b", 32, 2)]
    assert all(t["p_holm"] >= t["p_mcnemar"] and t["diff_ci95"][0] <= t["diff"] <= t["diff_ci95"][1] for t in tests)
    assert (tmp_path / "rep" / "figure2.png").stat().st_size > 0


def test_suite_default_mode_and_bad_block(tmp_path, wait_echo, capsys):
    a = _hf_folder(tmp_path / "ckpt" / "a")
    assert main(["budget-sweep", f"a={a}", "--preset", str(_suite(tmp_path, "independent")), "--out", "rep"]) == 0
    assert json.loads((tmp_path / "rep" / "figure2.json").read_text())["budget_mode"] == "independent"
    assert set(wait_echo.modes) == {"independent"}
    capsys.readouterr()
    assert main(["budget-sweep", f"a={a}", "--preset", str(_suite(tmp_path, "s1")), "--out", "rep2"]) == 2
    err = capsys.readouterr().err
    assert "budget_mode must be independent or s1-compat" in err and err.count("\n") == 1
    assert not (tmp_path / "rep2").exists()


def test_paper_and_tiny_suites_say_which_mode():
    from harness.paper.figure2 import check_block
    from harness.paper.suite import load_suite, suite_path

    for preset, mode in (("paper", "s1-compat"), ("tiny", "independent")):
        assert "budget_mode:" in suite_path(preset).read_text().split("budget_sweep:")[1]
        assert check_block(load_suite(preset))["budget_mode"] == mode
