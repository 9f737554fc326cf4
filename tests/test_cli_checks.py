"""Argument checks of the report / evaluation commands: bad input is one `error:` line, exit 2, before any
slow work (GPQA probe, Figure 1, training, model loading) and with nothing written; and reports say what
was really evaluated. No model is loaded and no network is used: the slow entry points are replaced by
stubs that fail the test if they are reached."""

import json
from pathlib import Path

import pytest

import harness.evaluation.runner as ev
import harness.paper.pipeline as pipeline
from harness.paper.evaluations import Evaluations
from harness.cli import main
from harness.evaluation.store import load_run
from test_report import A, B, _write_run   # one fake eval-run writer for the report tests


def _hf_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def _never(what):
    def stub(*a, **k):
        raise AssertionError(f"{what} ran before the arguments were checked")
    return stub


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert "Traceback" not in err and "skipping" not in err
    return lines[0]


@pytest.fixture
def no_probe(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline, "available_benchmarks", _never("the GPQA probe"))
    monkeypatch.setattr(Evaluations, "run", _never("evaluation"))


# ---------------------------------------------------------------------------------- table1


def test_table1_report_says_what_was_evaluated(tmp_path, monkeypatch):
    """--limit 1: the Subsets line says first 1 (not the suite's 2 / 3), and only the paper rows that
    match a reported checkpoint are marked as ours."""
    monkeypatch.chdir(tmp_path)
    seen = []

    def fake_eval(self, model, bench, limit, **kw):
        seen.append((model, bench, limit))
        return load_run(_write_run(tmp_path / "runs" / Path(model).name, "m", bench, {"q1": bench == "arith"}))

    monkeypatch.setattr(pipeline, "available_benchmarks",
                        lambda suite, console: {b: l for b, l in suite.benchmarks.items() if b != "gpqa_diamond"})
    monkeypatch.setattr(Evaluations, "run", fake_eval)
    x = _hf_folder(tmp_path / "ckpt")
    assert main(["table1", "--checkpoints", "base=smollm2-135m", f"X={x}", "--preset", "tiny", "--limit", "1",
                 "--out", "rep"]) == 0
    assert {lim for _, _, lim in seen} == {1}
    report = json.loads((tmp_path / "rep" / "table1.json").read_text())
    subsets = [d for d in report["deviations"] if d.startswith("Subsets")]
    assert subsets == ["Subsets: arith first 1, arith2 first 1, aime24 first 1, math500 first 1 problems (not the full benchmark)."]
    assert [r["ours"] for r in report["paper"] if r.get("ours")] == ["base"]
    txt = (tmp_path / "rep" / "table1.txt").read_text()
    assert "ours: base" in txt and "ours: iw-sft" not in txt and "ours: s1.1-sft" not in txt
    assert "first 2" not in txt and "first 3" not in txt


def test_reproduce_report_keeps_all_ours_marks(tmp_path):
    from harness.paper.report import build_table

    run = load_run(_write_run(tmp_path, "m", "arith", {"q1": True}))
    models = {n: [{"arith": run}] for n in ("base", "s1.1-sft", "iw-sft", "iw-sft-per-step")}
    report = build_table(models, [], [], "t")
    assert sorted(r["ours"] for r in report["paper"] if r.get("ours")) == ["base", "iw-sft", "iw-sft-per-step", "s1.1-sft"]


@pytest.mark.parametrize("args, needle", [
    (["--checkpoints", "smollm2-135m"], "NAME=PATH"),
    (["--checkpoints", "a=smollm2-135m", "--limit", "-1"], "--limit must be >= 0"),
    (["--checkpoints", "a=smollm2-135m", "--backend", "foo"], "unknown backend 'foo'"),
    (["--checkpoints", "a=smollm2-135m", "a=smollm2-135m"], "label 'a' twice"),
    (["--checkpoints", "a=smollm2-135m", "b=./no/such/folder"], "resolves to nothing"),
    (["--checkpoints", "a=smollm2-135m", "--preset", "nosuch"], "no evaluation suite"),
])
def test_table1_checks_arguments_before_probing(no_probe, tmp_path, capsys, args, needle):
    preset = [] if "--preset" in args else ["--preset", "tiny"]
    assert main(["table1", *args, *preset, "--out", "rep"]) == 2
    _one_error_line(capsys, needle)
    assert not (tmp_path / "rep").exists()


def test_table1_help_names_the_default_preset(capsys):
    with pytest.raises(SystemExit) as e:
        main(["table1", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "default paper" in out and "vLLM" in out


# ---------------------------------------------------------------------------------- reproduce-table1


@pytest.mark.parametrize("args, needle", [
    (["--limit", "-1"], "--limit must be >= 0"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--train-override", "max_stepz=2"], "max_stepz"),
    (["--train-override", "max_steps"], "KEY=VALUE"),
])
def test_reproduce_table1_checks_arguments_first(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline, "reproduce_table1", _never("reproduce-table1 (Figure 1, training)"))
    import harness.paper.figure1

    monkeypatch.setattr(harness.paper.figure1, "run_toy", _never("Figure 1"))
    assert main(["reproduce-table1", "--preset", "tiny", "--out", "rep", *args]) == 2
    _one_error_line(capsys, needle)
    assert not (tmp_path / "rep").exists() and not (tmp_path / "runs").exists()


def test_reproduce_table1_setting_change_suggests_what_works(tmp_path, monkeypatch, capsys):
    """A finished run trained with other settings: the error suggests moving it aside (which then passes
    the check), not an output_dir override (which every recipe would share, refused in turn)."""
    from harness.paper.suite import load_suite
    from harness.training.config import load_recipe

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline, "reproduce_table1", _never("reproduce-table1 (Figure 1, training)"))
    suite = load_suite("tiny")
    name = next(iter(suite.recipes))
    cfg = load_recipe(suite.recipe_path(name), ["max_steps=2"])
    done = Path(cfg.output_dir) / "final" / "iwsft_train.json"
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps({"config": cfg.to_dict()}))
    assert main(["reproduce-table1", "--preset", "tiny", "--out", "rep", "--train-override", "max_steps=3"]) == 2
    line = _one_error_line(capsys, "max_steps: 2 -> 3", f"mv {cfg.output_dir} {cfg.output_dir}.old")
    assert "output_dir override" not in line
    Path(cfg.output_dir).rename(f"{cfg.output_dir}.old")
    pipeline.check_reusable(suite, 1, ["max_steps=3"])          # the suggestion works


# ---------------------------------------------------------------------------------- budget-sweep


def test_budget_sweep_refuses_colliding_labels(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline, "budget_sweep", _never("the sweep"))
    _hf_folder(tmp_path / "a" / "final")
    _hf_folder(tmp_path / "b" / "final")
    assert main(["budget-sweep", "a/final", "b/final", "--out", "X"]) == 2
    _one_error_line(capsys, "'final'", "NAME=PATH", "a=a/final b=b/final")
    assert main(["budget-sweep", "m=a/final", "m=b/final", "--out", "X"]) == 2
    _one_error_line(capsys, "'m'", "NAME=PATH")
    assert main(["budget-sweep", "a/final", "nope/final", "--out", "X"]) == 2   # a wrong path, before --out exists
    _one_error_line(capsys, "nope/final")
    assert not (tmp_path / "X").exists()


def test_budget_sweep_distinct_labels_reach_the_sweep(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = {}
    monkeypatch.setattr(pipeline, "budget_sweep", lambda suite, models, out: got.update(models))
    _hf_folder(tmp_path / "a" / "final")
    _hf_folder(tmp_path / "b" / "final")
    assert main(["budget-sweep", "a/final", "b2=b/final", "--out", "X"]) == 0
    assert got == {"final": "a/final", "b2": "b/final"}


# ---------------------------------------------------------------------------------- eval


EVAL = ["eval", "--model", "smollm2-135m", "--limit", "1", "--no-progress"]


@pytest.mark.parametrize("args, needles", [
    (["--benchmarks", "arith", "--benchmark-option", "arith_levl=add2"], ["'arith_levl'", "did you mean 'arith_level'?"]),
    (["--benchmarks", "aime24", "--benchmark-option", "arith_level=add2"], ["'arith_level'", "only to arith"]),
    (["--benchmarks", "aime24,math500", "--benchmark-option", "foo=1"], ["'foo'", "take no options"]),
    (["--benchmarks", "arith", "--benchmark-option", "arith_level=add9"], ["unknown arith level 'add9'"]),
    (["--benchmarks", "arith", "--top-p", "2"], ["--top-p must be in (0, 1]"]),
    (["--benchmarks", "arith", "--top-p", "0"], ["--top-p must be in (0, 1]"]),
    (["--benchmarks", "arith", "--answer-budget", "200", "--total-budget", "50"],
     ["--answer-budget 200 exceeds --total-budget 50"]),
    (["--benchmarks", "arith", "--delimiters", "plain", "--thinking-budget", "64"],
     ["--delimiters plain generates without a thinking phase"]),
    (["--benchmarks", "arith", "--delimiters", "plain", "--wait", "2"], ["does not apply"]),
])
def test_eval_rejects_bad_options_before_loading(tmp_path, monkeypatch, capsys, args, needles):
    monkeypatch.setattr(ev, "run_eval", _never("the evaluation (model loading)"))
    assert main([*EVAL, *args, "--out", str(tmp_path / "X")]) == 2
    _one_error_line(capsys, *needles)
    assert not (tmp_path / "X").exists()


def test_eval_known_benchmark_option_is_passed_on(tmp_path, monkeypatch):
    got = []
    monkeypatch.setattr(ev, "run_eval", lambda cfg: got.append(cfg) or {"arith": {"n": 1}})
    assert main([*EVAL, "--benchmarks", "arith", "--benchmark-option", "arith_level=add2", "--top-p", "0.9",
                 "--answer-budget", "50", "--total-budget", "50", "--out", str(tmp_path / "X")]) == 0
    assert got[0].benchmark_options == {"arith_level": "add2"} and got[0].top_p == 0.9


# ---------------------------------------------------------------------------------- compare




def test_compare_writes_markdown(tmp_path):
    _write_run(tmp_path / "a", "m", "arith", A)
    _write_run(tmp_path / "b", "m", "arith", B)
    assert main(["compare", f"A={tmp_path / 'a' / 'm'}", f"B={tmp_path / 'b' / 'm'}", "--out", str(tmp_path / "rep")]) == 0
    for f in ("compare.json", "compare.md", "compare.txt"):
        assert (tmp_path / "rep" / f).is_file(), f
    md = (tmp_path / "rep" / "compare.md").read_text()
    assert "## arith" in md and "| A | 5 | 60.0 [" in md and "| B | 5 | 80.0 [" in md
    assert "| A | B | 5 | +20.0 [" in md and "p (exact)" in md and "Method: exact McNemar test" in md
    assert "| A | 3 | 2 |" in md     # agreement: A right on 3, both right on 2


def test_compare_refuses_colliding_labels(tmp_path, capsys):
    _write_run(tmp_path / "a", "m", "arith", A)
    _write_run(tmp_path / "b", "m", "arith", B)
    assert main(["compare", str(tmp_path / "a" / "m"), str(tmp_path / "b" / "m"), "--out", str(tmp_path / "rep")]) == 2
    _one_error_line(capsys, "'m'", "NAME=PATH")
    assert not (tmp_path / "rep").exists()


def test_subsets_line_says_what_the_runs_hold():
    """A limit past a benchmark's end is no subset; a real subset says 'first n of total'."""
    from types import SimpleNamespace

    from harness.paper.suite import load_suite

    suite = load_suite("tiny")
    suite.benchmarks = {"aime24": 1000, "arith": 5}
    held = lambda n: dict.fromkeys(map(str, range(n)), 1.0)   # noqa: E731
    # the folder's metrics may cover more problems than the run asked for (n 120): the line counts what was asked
    runs = {"base": [{"aime24": SimpleNamespace(metrics={"n": 30, "settings": {"n_problems_total": 30}}, scores=held(30)),
                      "arith": SimpleNamespace(metrics={"n": 120, "settings": {"n_problems_total": 300}}, scores=held(5))}]}
    lines = [d for d in pipeline.deviations(suite, runs, {}) if d.startswith("Subsets")]
    assert lines == ["Subsets: arith first 5 of 300 problems (not the full benchmark)."]


def test_step_curve_says_which_checkpoints_are_gone(tmp_path, monkeypatch):
    from rich.console import Console
    from types import SimpleNamespace

    from harness.paper.suite import load_suite

    root = tmp_path / "run"
    (root / "checkpoints" / "step-000004").mkdir(parents=True)
    (root / "final").mkdir()
    (root / "config.yaml").write_text("save_every: 2\n")
    (root / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 7)))
    evals = SimpleNamespace(run=lambda *a, **k: SimpleNamespace(scores={"q": 1.0}))
    suite = load_suite("tiny")
    name = suite.step_curve["recipes"][0]
    console = Console(record=True, width=200)
    curve = pipeline.step_curve(suite, evals, {name: root / "final"}, SimpleNamespace(scores={"q": 0.0}), console)
    assert [p["step"] for p in curve["curves"][name]] == [0, 4, 6]
    assert "no checkpoint left at step(s) 2" in console.export_text()


def test_reproduce_table1_help_lists_every_preset_in_evals(capsys):
    """--preset's help names the suites evals/ holds (evidence and open-r1 too), and that a path is accepted."""
    with pytest.raises(SystemExit) as e:
        main(["reproduce-table1", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    presets = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "evals").glob("*.yaml"))
    assert {"evidence", "open-r1", "paper", "tiny"} <= set(presets)
    assert f"a preset in evals/ ({', '.join(presets)};" in out and "the path of a suite YAML" in out, out
