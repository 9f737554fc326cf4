"""`iwsft power` and harness.core.power: the printed minimum detectable difference is the one a
simulation of the model detects 80% of the time; the reverse questions; pilots; the report's line."""

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.core import power
from harness.core.power import Design

sys.path.insert(0, str(Path(__file__).parent))
from test_report import _arith_runs, _write_run  # noqa: E402


@pytest.mark.parametrize("d", [
    Design(clusters=28, items_per_cluster=11, seeds=3, accuracy=0.3, icc=0.4, seed_sd=0.03),   # tiny's arith
    Design(clusters=100, items_per_cluster=4, seeds=5, accuracy=0.5, icc=0.2, seed_sd=0.02),
    Design(clusters=200, items_per_cluster=2, seeds=8, accuracy=0.4, icc=0.3, seed_sd=0.01),
    # the evidence pilot's shape: paired checkpoints disagreeing on 15% of 1,207 independent problems
    Design(clusters=1207, items_per_cluster=1, seeds=12, accuracy=0.36, diff_sd=0.02, discordance=0.15),
])
def test_simulated_power_at_the_mdd_is_80_percent(d):
    """3000 simulated experiments each (SE of a share near 0.8: 0.7 points): within 2.5 points of 80%.
    The simulation runs the report's own test (the paired t over seeds, S - 1 df); a formula without
    the design effect (icc), with a z for the t quantile, or a two-sample t (2S - 2 df) misses by more."""
    x = power.mdd(d)
    assert power.power(d, x) == pytest.approx(0.8, abs=1e-4)
    assert power.simulate_power(d, x, sims=3000, seed=1) == pytest.approx(0.8, abs=0.025)


def test_the_simulated_test_is_the_reports():
    """simulate_power rejects with scipy's one-sample t; the report's seed_t_test gives the same p."""
    from scipy import stats as st

    from harness.core.stats import seed_t_test

    rng = np.random.default_rng(3)
    for n in (2, 3, 7):
        diffs = list(rng.normal(0.02, 0.03, size=n))
        assert seed_t_test(diffs)[0] == pytest.approx(float(st.ttest_1samp(diffs, 0.0).pvalue), rel=1e-9)


def test_two_seeds_plan_with_one_degree_of_freedom():
    """The report pairs seed i of A with seed i of B: 2 seeds give a t with 1 df, not a two-sample t's 2.
    At the old two-sample MDD the report's test has well under 80% power."""
    from scipy import stats as st

    d = Design(clusters=400, items_per_cluster=1, seeds=2, accuracy=0.36, diff_sd=0.02, discordance=0.3)
    se = math.sqrt(d.diff_var(0.1) / 2)            # (E[Y^2] - d^2): the item variance at the true difference
    assert power.power(d, 0.1) == pytest.approx(float(st.nct.sf(st.t.ppf(0.975, 1), 1, 0.1 / se)
                                                      + st.nct.cdf(-st.t.ppf(0.975, 1), 1, 0.1 / se)), rel=1e-9)
    se = math.sqrt(d.diff_var() / 2)
    two_sample = st.t.ppf(0.975, 2) * se + st.norm.ppf(0.8) * se        # roughly what df = 2 would plan
    assert power.simulate_power(d, two_sample, sims=3000, seed=4) < 0.5


def test_shared_seed_noise_cancels_in_the_paired_plan():
    """Checkpoints of one seed that agree on most items (low discordance) and move together over
    seeds (small diff_sd) need far fewer seeds than independent arms with the same seed SD."""
    indep = Design(clusters=1207, items_per_cluster=1, seeds=5, accuracy=0.36, seed_sd=0.13)
    paired = indep.with_(diff_sd=0.02, discordance=0.15)
    assert indep.pair_sd() == pytest.approx(math.sqrt(2) * 0.13)
    assert power.mdd(paired) < power.mdd(indep) / 5
    assert power.seeds_needed(paired, 0.03) < power.seeds_needed(indep, 0.03)


def test_power_at_zero_is_alpha_and_grows():
    d = Design(clusters=50, items_per_cluster=3, seeds=4, accuracy=0.4, icc=0.3, seed_sd=0.02)
    assert power.power(d, 0.0) == pytest.approx(0.05, abs=1e-6)
    assert power.power(d, 0.02) < power.power(d, 0.05) < power.power(d.with_(seeds=8), 0.05)
    assert power.simulate_power(d, 0.0, sims=3000, seed=2) == pytest.approx(0.05, abs=0.015)


def test_reverse_questions_are_the_smallest_that_reach_80_percent():
    d = Design(clusters=400, items_per_cluster=2, seeds=3, accuracy=0.4, icc=0.3, seed_sd=0.01)
    s = power.seeds_needed(d, 0.03)
    assert power.power(d.with_(seeds=s), 0.03) >= 0.8 > power.power(d.with_(seeds=s - 1), 0.03)
    c = power.clusters_needed(d.with_(seeds=10), 0.03)
    assert power.power(d.with_(seeds=10, clusters=c), 0.03) >= 0.8 > power.power(d.with_(seeds=10, clusters=c - 1), 0.03)
    # seed noise alone: the variance of a mean of 2 seeds per arm never gets under the target
    assert power.clusters_needed(d.with_(seeds=2, seed_sd=0.03), 0.03) is None


def test_icc_estimate_recovers_a_simulated_correlation():
    rng = np.random.default_rng(0)
    icc, p, k, m = 0.4, 0.3, 400, 6
    pc = rng.beta(p * (1 / icc - 1), (1 - p) * (1 / icc - 1), size=k)
    values = [float(x) for c in pc for x in rng.random(m) < c]
    groups = [g for g in range(k) for _ in range(m)]
    assert power.icc_anova(values, groups) == pytest.approx(icc, abs=0.06)
    assert power.icc_anova([1.0, 0.0] * 50, list(range(100))) == 0.0    # singletons: no correlation to see


def test_pilot_seed_noise_has_its_own_sampling_removed():
    d = Design(clusters=28, items_per_cluster=11, seeds=2, accuracy=0.3, icc=0.4)
    v = power.sampling_var_of_accuracy(d)
    assert v == pytest.approx(0.3 * 0.7 * (1 + 10 * 0.4) / (28 * 11))
    assert power.noise_sd_from_pilot(math.sqrt(v), v) == 0.0
    assert power.noise_sd_from_pilot(math.sqrt(v + 0.03 ** 2), v) == pytest.approx(0.03)
    # the paired difference's own sampling variance: (E[Y^2] - d^2) x design effect / items
    assert d.with_(discordance=0.2).sampling_var(0.1) == pytest.approx((0.2 - 0.01) * 5 / 308)


def test_cli_answers_both_questions(capsys):
    assert main(["power", "--clusters", "400", "--items-per-cluster", "2", "--icc", "0.3", "--accuracy", "40",
                 "--seed-sd", "1", "--seeds", "3", "--diff", "3"]) == 0
    out = capsys.readouterr().out
    d = Design(clusters=400, items_per_cluster=2, seeds=3, accuracy=0.4, icc=0.3, seed_sd=0.01)
    assert f"minimum detectable difference (80% power): {100 * power.mdd(d):.2f} points" in out
    assert f"seeds per method needed at 400 clusters: {power.seeds_needed(d, 0.03)}" in out
    assert f"10 seeds per method: {power.clusters_needed(d.with_(seeds=10), 0.03)} clusters" in out
    # the paired test's own noise, assumed: per-seed difference SD and discordance
    assert main(["power", "--clusters", "1207", "--diff-sd", "2", "--discordance", "15", "--seeds", "12", "--diff", "3"]) == 0
    out = capsys.readouterr().out
    d = Design(clusters=1207, items_per_cluster=1, seeds=12, diff_sd=0.02, discordance=0.15)
    assert "per-seed difference SD 2.0 points, discordance 15.0%," in out
    assert f"minimum detectable difference (80% power): {100 * power.mdd(d):.2f} points" in out


def test_cli_counts_agree_and_a_mean_item_count_is_rounded(capsys):
    """'1 cluster x 1 item, 1 seed', and a pilot's mean items per cluster to one decimal (11.1, not 11.1429)."""
    assert main(["power", "--clusters", "1", "--seed-sd", "1", "--seeds", "1", "--diff", "5"]) == 0
    out = capsys.readouterr().out
    assert "design: 1 cluster x 1 item, 1 seed per arm," in out and "needed at 1 cluster:" in out
    assert "clusters of 1 item\n" in out and not re.search(r"(?<![\d.])1 (items|clusters|seeds)\b", out), out
    assert main(["power", "--clusters", "28", "--items-per-cluster", "11.142857", "--icc", "0.3", "--seed-sd", "1",
                 "--diff", "5"]) == 0
    out = capsys.readouterr().out
    assert "design: 28 clusters x 11.1 items, 3 seeds per arm," in out and "clusters of 11.1 items\n" in out
    assert "11.14" not in out
    assert [power.items(m) for m in (1, 1.0, 2, 11.142857, 0.94)] == ["1 item", "1 item", "2 items", "11.1 items",
                                                                       "0.9 items"]


@pytest.mark.parametrize("argv, msg", [
    ([], "no noise to plan with"),
    (["--seed-sd", "2"], "needs --clusters"),
    (["--seed-sd", "2", "--clusters", "0"], "--clusters must be >= 1"),
    (["--seed-sd", "2", "--clusters", "9", "--icc", "1.5"], "--icc must be between 0 and 1"),
    (["--seed-sd", "2", "--clusters", "9", "--accuracy", "0.3", "--diff", "0"], "--diff must be"),
    (["--pilot", "/no/such/report"], "cannot read a Table 1 report"),
    (["--pilot", "x", "--pilot-runs", "y"], "not both"),
    (["--diff-sd", "2", "--clusters", "9", "--discordance", "0"], "--discordance must be a percentage above 0"),
])
def test_bad_input_is_one_line_exit_2(argv, msg, capsys):
    assert main(["power", *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def _seeded_report(tmp_path):
    """A 2-seed report of two methods on arith: 10 clusters, per-seed accuracies differing."""
    from harness.evaluation.store import load_run
    from harness.paper.report import build_table

    runs = {m: [{"arith": load_run(_arith_runs(tmp_path / f"{m}{s}", "m", set(range(k))))} for s, k in enumerate(ks)]
            for m, ks in {"s1.1-sft": (3, 5), "iw-sft": (4, 7)}.items()}
    return runs, build_table(runs, [["s1.1-sft", "iw-sft"]], [], "Seeds")


def test_report_prints_the_mdd_of_its_own_design(tmp_path):
    from harness.paper.power import pilot_from_runs

    runs, report = _seeded_report(tmp_path)
    p = pilot_from_runs("arith", {m: [s["arith"] for s in ss] for m, ss in runs.items()})
    assert (p.clusters, p.seeds) == (10, 2)
    # pooled within-method SD over seeds, by hand: accuracies are the shares of 10 all-or-nothing pairs
    accs = {m: [sum(s["arith"].scores.values()) / len(s["arith"].scores) for s in ss] for m, ss in runs.items()}
    want = math.sqrt(sum(np.var(a, ddof=1) for a in accs.values()) / 2)
    assert p.observed_sd == pytest.approx(want)
    assert p.icc > 0.9                 # every phrasing of a pair right or wrong together
    (line,) = [m for m in report["methods"] if m.startswith("Minimum detectable difference")]
    assert "2 seeds per method" in line and f"arith {100 * power.mdd(p.design()):.1f} points" in line
    # the noise planned with is that of the report's own test: its per-seed differences, sampling removed
    (over,) = report["methods_over_seeds"]
    assert p.seed_diffs == pytest.approx(over["seed_diffs"]) and "paired t over seeds printed above (1 df)" in line
    d = p.design()
    mean = sum(p.seed_diffs) / 2
    assert d.diff_sd == pytest.approx(power.noise_sd_from_pilot(abs(p.seed_diffs[1] - p.seed_diffs[0]) / math.sqrt(2),
                                                                d.sampling_var(mean)))
    pairs = [(runs["s1.1-sft"][i]["arith"].scores, runs["iw-sft"][i]["arith"].scores) for i in range(2)]
    assert p.discordance == pytest.approx(np.mean([np.mean([(b[q] - a[q]) ** 2 for q in a]) for a, b in pairs]))


def test_pilot_from_report_and_run_folders(tmp_path, capsys):
    from harness.paper.report import write_report

    runs, report = _seeded_report(tmp_path)
    write_report(report, tmp_path / "rep")
    capsys.readouterr()
    assert main(["power", "--pilot", str(tmp_path / "rep"), "--seeds", "5"]) == 0
    out = capsys.readouterr().out
    assert "pilot: arith, s1.1-sft, iw-sft; 2 seeds per method, 10 clusters x 11.4 items" in out
    assert "design: 10 clusters x 11.4 items, 5 seeds per arm" in out
    dirs = [str(s["arith"].path) for s in runs["iw-sft"]]
    assert main(["power", "--pilot-runs", *dirs, "--diff", "5"]) == 0
    assert "seeds per method needed" in capsys.readouterr().out
    one = json.loads((tmp_path / "rep" / "table1.json").read_text())
    for r in one["rows"]:
        r["benchmarks"]["arith"].pop("per_seed", None)
        r["benchmarks"]["arith"]["run_dir"] = dirs[0]
    (tmp_path / "one.json").write_text(json.dumps(one))
    assert main(["power", "--pilot", str(tmp_path / "one.json")]) == 2
    assert "one seed per method" in capsys.readouterr().err


def test_one_seed_report_says_it_is_a_lower_bound(tmp_path):
    from harness.evaluation.store import load_run
    from harness.paper.report import build_table

    a = {"arith": load_run(_write_run(tmp_path / "a", "m", "arith", {"q1": True, "q2": False}))}
    report = build_table({"base": [a], "iw-sft": [a]}, [["base", "iw-sft"]], [], "One")
    assert any("1 seed per method" in m and "lower bound" in m for m in report["methods"])


def test_a_zero_accuracy_benchmark_has_no_zero_mdd(tmp_path):
    """Every row at 0% (aime24 on the tiny model): the binomial variance is 0, so without the
    continuity correction the report would print an MDD of 0.0 points."""
    from harness.evaluation.store import load_run
    from harness.paper.power import mdd_lines

    zero = {"aime24": load_run(_write_run(tmp_path / "a", "m", "aime24", {f"q{i}": False for i in range(30)}))}
    (line,) = mdd_lines({"base": [zero], "s1.1-sft": [zero], "iw-sft": [zero]})
    mdd = float(line.split("aime24 ")[1].split(" points")[0])
    assert mdd > 5


def test_pilot_names_its_pair_and_the_test_and_a_pair_can_be_chosen(tmp_path, capsys):
    from harness.paper.report import write_report

    runs, report = _seeded_report(tmp_path)
    write_report(report, tmp_path / "rep")
    capsys.readouterr()
    assert main(["power", "--pilot", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "pilot's per-seed differences iw-sft - s1.1-sft (seed i with seed i;" in out
    assert "icc of outcomes" in out and "icc of the paired differences" in out
    assert "test planned: the report's t test over training seeds of the per-seed paired differences B - A (1 df)" in out
    assert main(["power", "--pilot", str(tmp_path / "rep"), "--pair", "iw-sft,s1.1-sft"]) == 0
    assert "differences s1.1-sft - iw-sft" in capsys.readouterr().out
    assert main(["power", "--pilot", str(tmp_path / "rep"), "--pair", "iw-sft,nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--pair names nope" in err and "it has s1.1-sft, iw-sft" in err
    # one method's model folders (an `iwsft eval --out` model folder each), not only run folders
    model_dirs = [str(s["arith"].path.parent.parent) for s in runs["iw-sft"]]
    assert main(["power", "--pilot-runs", *model_dirs, "--diff", "5"]) == 0
    assert "pilot: arith, method; 2 seeds per method" in capsys.readouterr().out


def test_seed_noise_planned_as_zero_is_flagged(tmp_path, capsys):
    """Two seeds whose per-seed differences are equal: the SD beyond sampling floors at 0 and the plan says so."""
    from harness.evaluation.store import load_run
    from harness.paper.report import build_table, write_report

    runs = {m: [{"arith": load_run(_arith_runs(tmp_path / f"{m}{s}", "m", set(range(k))))} for s, k in enumerate(ks)]
            for m, ks in {"sft": (3, 5), "iw-sft": (4, 6)}.items()}
    write_report(build_table(runs, [["sft", "iw-sft"]], [], "Zero"), tmp_path / "rep")
    capsys.readouterr()
    assert main(["power", "--pilot", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "+10.5 +10.5 points" in out and "planned as 0; from so few seeds that is weak evidence" in out
