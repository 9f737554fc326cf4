"""avg@k, maj@k and pass@k on hand-made samples; the suite keys that ask for them; `iwsft eval` printing them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.core import stats
from harness.core.errors import UserError
from harness.evaluation.aggregates import Aggregate, compute_aggregates, majority_index, parse_aggregates


def _rows(table: dict[str, list[tuple[str | None, bool]]]) -> dict:
    return {(pid, s): {"extracted": a, "correct": c} for pid, xs in table.items() for s, (a, c) in enumerate(xs)}


# gold of every problem: 25
ROWS = _rows({
    "p1": [("25", True), ("025", True), ("7", False), ("7", False)],      # tie 2-2: "25" came first -> right
    "p2": [("7", False), ("25", True), ("7", False), ("25", True)],       # tie 2-2: "7" came first -> wrong
    "p3": [(None, False), ("3", False), ("25", True), ("25", True)],      # 25 wins 2-1, the no-answer does not vote
    "p4": [(None, False), (None, False), (None, False), (None, False)],   # no answer at all
})
PIDS = ["p1", "p2", "p3", "p4"]


def _agg(*names, rows=ROWS, pids=PIDS, kind="integer", clusters=None):
    return compute_aggregates(parse_aggregates(list(names), 4), pids, rows, 4, kind, clusters)


def test_avg_at_k_uses_the_first_k_samples_and_a_per_problem_interval():
    a = _agg("avg@4", "avg@2", "avg@1", "avg@3")
    assert a["avg@4"]["value"] == pytest.approx((2 / 4 + 2 / 4 + 2 / 4 + 0) / 4)
    assert a["avg@2"]["value"] == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    # the first k, not the last k (avg@2 is 1.5 / 4 either way on this table; avg@1 and avg@3 are not)
    assert a["avg@1"]["value"] == pytest.approx(1 / 4)                    # last 1: p2, p3 right = 2 / 4
    assert a["avg@3"]["value"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3 + 0) / 4)   # last 3: 5/3 / 4
    # ... whatever the order the rows were stored in (resumed runs and shards append out of order)
    shuffled = dict(sorted(ROWS.items(), key=lambda kv: (-kv[0][1], kv[0][0])))
    b = _agg("avg@1", "avg@3", rows=shuffled)
    assert (b["avg@1"]["value"], b["avg@3"]["value"]) == (a["avg@1"]["value"], a["avg@3"]["value"])
    per = [0.5, 0.5, 0.5, 0.0]
    assert tuple(a["avg@4"]["ci95"]) == stats.accuracy_interval(per, None, 4)[0]
    # the k samples of a problem are one cluster: never as narrow as 16 independent trials
    lo, hi = a["avg@4"]["ci95"]
    wlo, whi = stats.wilson(6, 16)
    assert hi - lo > whi - wlo and "bootstrap over problems" in a["avg@4"]["ci_method"]


def test_pass_at_k_is_chen_et_al_unbiased_estimator():
    a = _agg("pass@1", "pass@2", "pass@4")
    c = [2, 2, 2, 0]
    for k in (1, 2, 4):
        want = sum(1 - math.comb(4 - ci, k) / math.comb(4, k) for ci in c) / 4
        assert a[f"pass@{k}"]["value"] == pytest.approx(want)
    assert a["pass@2"]["value"] == pytest.approx(3 * (1 - 1 / 6) / 4)      # 1 - C(2,2)/C(4,2) = 5/6 each
    assert a["pass@1"]["value"] == pytest.approx(_agg("avg@4")["avg@4"]["value"])   # pass@1 from n = avg@n


def test_maj_at_k_groups_equivalent_answers_and_breaks_ties_by_first_appearance():
    a = _agg("maj@4")["maj@4"]
    assert a["value"] == pytest.approx(2 / 4)      # p1 right (25 == 025, tie won by the earlier), p3 right
    assert a["ties"] == 2 and a["no_answer"] == 1
    assert _agg("maj@1")["maj@1"]["value"] == pytest.approx(1 / 4)     # first sample only: p1
    # without the grader's equivalence "025" would be its own group and p1 would tie 1-1-2 and lose
    assert majority_index(["25", "025", "7", "7"], lambda x, y: x == y) == (2, False)
    assert majority_index(["25", "025", "7", "7"], lambda x, y: int(x) == int(y)) == (0, True)
    assert majority_index([None, None], lambda x, y: True) == (None, False)


def test_maj_uses_the_math_and_choice_graders():
    math_rows = _rows({"q": [("\\frac{1}{2}", True), ("0.5", True), ("1/3", False), ("1/3", False), ("1/3", False)]})
    got = compute_aggregates([Aggregate("maj", 5)], ["q"], math_rows, 5, "math")["maj@5"]
    assert got["value"] == 0.0 and got["ties"] == 0                     # 1/3 wins 3-2
    got = compute_aggregates([Aggregate("maj", 4)], ["q"], math_rows, 5, "math")["maj@4"]
    assert got["value"] == 1.0 and got["ties"] == 1                     # 1/2 (two spellings) ties 1/3 2-2, came first
    choice_rows = _rows({"g": [("B", True), ("(B)", True), ("C", False)]})
    assert compute_aggregates([Aggregate("maj", 3)], ["g"], choice_rows, 3, "choice")["maj@3"]["value"] == 1.0


def test_clusters_of_correlated_problems_reach_the_interval():
    clusters = {"p1": "a", "p2": "a", "p3": "b", "p4": "b"}
    a = _agg("avg@4", clusters=clusters)["avg@4"]
    assert "2 clusters" in a["ci_method"]
    per = [0.5, 0.5, 0.5, 0.0]
    clustered, _ = stats.accuracy_interval(per, ["a", "a", "b", "b"], 4)
    assert tuple(a["ci95"]) == clustered != stats.accuracy_interval(per, None, 4)[0]    # the keys, in problem order
    assert tuple(_agg("avg@4", clusters={"p1": "a", "p3": "a", "p2": "b", "p4": "b"})["avg@4"]["ci95"]) == \
        stats.accuracy_interval(per, ["a", "b", "a", "b"], 4)[0]


def test_run_metrics_take_clusters_from_the_problems():
    """compute_metrics (`iwsft eval`'s metrics.json) reads each problem's meta["cluster"]: one big
    cluster of right answers and seven small wrong ones is 8 units, not 30 problems."""
    from harness.evaluation.benchmarks import Problem
    from harness.evaluation.metrics import compute_metrics

    problems = [Problem(id=f"big{i}", question="q", gold="1", meta={"cluster": "big"}) for i in range(16)]
    problems += [Problem(id=f"s{g}-{t}", question="q", gold="1", meta={"cluster": f"s{g}"}) for g in range(7) for t in range(2)]
    rows = {(p.id, 0): {"correct": p.id.startswith("big"), "extracted": "1"} for p in problems}
    m = compute_metrics(problems, rows, 1)
    keys = [p.meta["cluster"] for p in problems]
    assert tuple(m["ci95"]) == stats.accuracy_interval([float(r["correct"]) for r in rows.values()], keys, 1)[0]
    assert m["ci95"][0] < 0.05 and "8 clusters" in m["ci_method"]


@pytest.mark.parametrize("spec,samples,needle", [
    ("top@4", 4, "not avg@K"), ("maj@16", 4, "--samples 16"), ("pass@0", 4, "between 1"), ("avg@", 4, "not avg@K")])
def test_bad_aggregates_are_one_line(spec, samples, needle):
    with pytest.raises(UserError, match=needle):
        parse_aggregates(spec, samples)
    assert [a.name for a in parse_aggregates("avg@4, maj@4,avg@4", 4)] == ["avg@4", "maj@4"]


def test_suite_keys_reach_the_eval_config_and_bad_ones_fail(tmp_path):
    from harness.paper.evaluations import Evaluations
    from harness.paper.suite import load_suite

    s = load_suite("open-r1")
    cfg = Evaluations(s).config("someone/model", "aime24", None)
    assert (cfg.samples, cfg.temperature, cfg.top_p, list(cfg.aggregates)) == (16, 0.6, 0.95, ["avg@16", "pass@1", "maj@16"])
    text = (Path(s.path).read_text().replace("samples: 16", "samples: 4"))
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(UserError, match="bad.yaml: aggregate avg@16 needs K"):
        load_suite(str(tmp_path / "bad.yaml"))
    (tmp_path / "bad2.yaml").write_text(Path(s.path).read_text().replace("top_p: 0.95", "top_p: 0.95\nmin_p: 3"))
    with pytest.raises(UserError, match="bad2.yaml: min_p must be in"):
        load_suite(str(tmp_path / "bad2.yaml"))


@pytest.mark.slow
def test_eval_prints_the_aggregates(tmp_path, capsys):
    from harness.cli import main

    out = tmp_path / "runs"
    assert main(["eval", "--model", "smollm2-135m", "--benchmarks", "arith", "--limit", "3", "--samples", "2",
                 "--temperature", "0.7", "--top-k", "50", "--aggregate", "avg@2,maj@2", "--aggregate", "pass@1",
                 "--thinking-budget", "16", "--answer-budget", "8", "--total-budget", "300", "--backend", "hf",
                 "--no-progress", "--out", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "arith: avg@2" in printed and "maj@2" in printed and "pass@1" in printed
    metrics = json.loads(next(out.glob("*/arith/*/metrics.json")).read_text())
    aggs = metrics["aggregates"]
    assert set(aggs) == {"avg@2", "maj@2", "pass@1"} and aggs["avg@2"]["n"] == 3
    assert aggs["avg@2"]["value"] == pytest.approx(metrics["accuracy"]) == pytest.approx(aggs["pass@1"]["value"])
    settings = json.loads(next(out.glob("*/arith/*/settings.json")).read_text())
    assert settings["top_k"] == 50 and "min_p" not in settings
