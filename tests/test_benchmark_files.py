"""Benchmarks from a user's file (`iwsft eval --benchmark-file`, a suite's `benchmark_files:`) and from
other packages (the `iwsft.benchmarks` entry point): registered like the built-in ones, graded by
the same graders, keyed by the file's bytes; bad files are one line naming file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.errors import UserError
from harness.evaluation.benchmarks import _core, get_benchmark, register_file, title

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "evals" / "benchmarks" / "mini-amc.jsonl"


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """Each test registers into a copy of the registry."""
    _core.names()
    monkeypatch.setattr(_core, "_REGISTRY", dict(_core._REGISTRY))


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_example_file_registers_and_loads():
    name = register_file(EXAMPLE)
    spec = get_benchmark(name)
    problems = spec.load({})
    assert name == "mini-amc" and spec.grader == "integer" and len(problems) == 10
    assert len(spec.content_sha256) == 64 and title(name) == "mini-amc"
    assert {p.id for p in problems} >= {"add-1", "lcm"} and all(p.gold.isdigit() for p in problems)
    assert register_file(EXAMPLE) == name           # the same file again: a no-op, not a collision


def test_choice_yaml_with_file_level_grader(tmp_path):
    p = tmp_path / "quiz.yaml"
    p.write_text("title: My quiz\ngrader: choice\nproblems:\n"
                 "  - id: q1\n    question: Which is even?\n    options: ['3', '4', '5']\n    gold: '4'\n"
                 "  - {id: q2, question: 'Which is odd?', options: ['2', '7'], gold: B}\n")
    spec = get_benchmark(register_file(p))
    q1, q2 = spec.load({})
    assert spec.grader == "choice" and title("quiz") == "My quiz"
    assert q1.gold == "B" and q1.question.endswith("\n\nA) 3\nB) 4\nC) 5") and q2.gold == "B"
    from harness.evaluation.grading import grade_one

    assert grade_one("choice", "The answer is (B)", q1.gold).correct


@pytest.mark.parametrize("rows, message", [
    ([{"id": 1, "question": "q", "gold": "1", "grader": "integr"}], r"x\.jsonl:1: unknown grader kind 'integr'"),
    ([{"id": 1, "question": "q", "gold": "1", "grader": "integer"}, "{not json"], r"x\.jsonl:2: not valid JSON"),
    (["", {"id": 1, "question": "q", "grader": "integer"}], r"x\.jsonl:2: missing field 'gold'"),
    ([{"id": 1, "question": "q", "gold": "1", "grader": "integer"},
      {"id": "1", "question": "r", "gold": "2", "grader": "integer"}], r"x\.jsonl:2: duplicate id '1' \(first on line 1\)"),
    ([{"id": 1, "question": "q", "gold": "A", "grader": "choice"}], r"x\.jsonl:1: a choice question without options"),
    ([{"id": 1, "question": "q", "gold": "E", "grader": "choice", "options": ["a", "b"]}], r"x\.jsonl:1: gold 'E'"),
    ([{"id": 1, "question": "q", "gold": "x", "grader": "integer"}], r"x\.jsonl:1: gold 'x' is not an integer"),
    ([{"id": 1, "question": "q", "gold": "1", "grader": "integer", "answr": 2}], r"x\.jsonl:1: unknown field 'answr'"),
    ([{"id": 1, "question": "q", "gold": "1", "grader": "integer"},
      {"id": 2, "question": "q", "gold": "1", "grader": "math"}], r"x\.jsonl:2: grader 'math' differs"),
    ([], r"holds no problems"),
])
def test_bad_file_is_one_line_naming_file_and_line(tmp_path, rows, message):
    with pytest.raises(UserError, match=message) as e:
        register_file(_jsonl(tmp_path / "x.jsonl", rows))
    assert "\n" not in str(e.value)
    assert "x" not in _core._REGISTRY


def test_bad_yaml_names_the_line(tmp_path):
    p = tmp_path / "y.yaml"
    p.write_text("- {id: a, question: q, gold: '1', grader: integer}\n- id: b\n  question: q\n  grader: integer\n")
    with pytest.raises(UserError, match=r"y\.yaml:2: missing field 'gold'"):
        register_file(p)
    p.write_text("- {id: a, question: q, gold: '1'\n")
    with pytest.raises(UserError, match=r"y\.yaml:\d+:\d+: not valid YAML"):
        register_file(p)


def test_cli_refuses_bad_input_in_one_line_before_any_work(tmp_path, capsys):
    good = _jsonl(tmp_path / "aime24.jsonl", [{"id": 1, "question": "q", "gold": "1", "grader": "integer"}])
    bad = _jsonl(tmp_path / "bad.jsonl", [{"id": 1, "question": "q", "gold": "1", "grader": "nope"}])
    out = tmp_path / "out"
    for args in (["--benchmark-file", str(good)],                  # the name of a built-in benchmark
                 ["--benchmark-file", str(bad)],
                 ["--benchmark-file", f"a={good}", "--benchmark-file", f"a={bad}"],
                 ["--benchmark-file", str(tmp_path / "missing.jsonl")]):
        assert main(["eval", "--model", "smollm2-135m", "--backend", "hf", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
    assert not out.exists()
    assert "already a built-in" in _last_error(tmp_path, good, capsys)


def _last_error(tmp_path, good, capsys):
    main(["eval", "--model", "smollm2-135m", "--backend", "hf", "--benchmark-file", str(good), "--out", str(tmp_path)])
    return capsys.readouterr().err


def test_the_file_keys_the_run_folder(tmp_path, monkeypatch):
    """Any edit of the file (here only the grader kind: same ids, questions and golds) is another folder."""
    from harness.evaluation import runner as ev
    from harness.evaluation import store
    from harness.evaluation.config import EvalConfig
    from harness.evaluation.engine import Engine

    class HubEngine(Engine):
        def model_identity(self):
            return "hub:someone/model"

    def key(grader):
        _core._REGISTRY.pop("f", None)
        path = _jsonl(tmp_path / "f.jsonl", [{"id": 1, "question": "What is 1+1?", "gold": "2", "grader": grader}])
        spec = get_benchmark(register_file(path))
        cfg = EvalConfig(model="someone/model", backend="hf", benchmarks=["f"])
        return store.settings_hash(ev._settings(cfg, HubEngine.for_config(cfg), spec, spec.load({})))

    assert key("integer") == key("integer")
    assert key("integer") != key("math")


def test_suite_registers_its_files(tmp_path):
    from harness.paper.suite import load_suite

    (tmp_path / "data").mkdir()
    _jsonl(tmp_path / "data" / "mine.jsonl", [{"id": 1, "question": "q", "gold": "3", "grader": "integer"}])
    (tmp_path / "s.yaml").write_text("backend: hf\nrecipes: {}\nbase_model: smollm2-135m\nbenchmarks: {arith: 5}\n"
                                     "thinking_budget: 8\nanswer_budget: 8\nmax_new_tokens: 64\n"
                                     "benchmark_files: {aime25: data/mine.jsonl}\n")
    suite = load_suite(str(tmp_path / "s.yaml"))
    assert suite.benchmarks == {"arith": 5, "aime25": None}
    assert get_benchmark("aime25").load({})[0].gold == "3"


def test_entry_point_plugin_registers_its_benchmark(tmp_path, monkeypatch):
    """A package's Benchmark through the `iwsft.benchmarks` entry point: a dist-info on sys.path, no pip."""
    pkg = tmp_path / "mybench_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from harness.evaluation.benchmarks import Benchmark, Problem\n"
        "BENCHMARK = Benchmark(name='plugged', description='d', grader='integer', title='Plugged', report_order=5,\n"
        "                      load=lambda o: [Problem(id='p1', question='What is 2+2?', gold='4')])\n"
        "CLASH = Benchmark(name='aime24', description='d', grader='integer', load=lambda o: [])\n")
    dist = tmp_path / "mybench-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mybench\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[iwsft.benchmarks]\nplugged = mybench_pkg:BENCHMARK\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_core, "_REGISTRY", {})
    monkeypatch.setattr(_core, "_DISCOVERED", False)
    assert "plugged" in _core.names() and "aime24" in _core.names()
    assert title("plugged") == "Plugged" and _core.report_order(["aime24", "plugged"]) == ["plugged", "aime24"]
    assert _core.load_benchmark("plugged")[0].gold == "4"

    (dist / "entry_points.txt").write_text("[iwsft.benchmarks]\nclash = mybench_pkg:CLASH\n")
    monkeypatch.setattr(_core, "_REGISTRY", {})
    monkeypatch.setattr(_core, "_DISCOVERED", False)
    with pytest.raises(UserError, match=r"benchmark 'aime24' from package mybench .* built-in benchmark"):
        _core.names()


def test_file_benchmark_end_to_end_on_a_tiny_model(tmp_path, smollm2_tokenizer):
    """`iwsft eval --benchmark-file` runs, grades with the file's grader and reports it like a built-in."""
    from tests.tiny_models import save_tiny_model_folder

    save_tiny_model_folder(tmp_path / "m", smollm2_tokenizer)
    args = ["eval", "--model", str(tmp_path / "m"), "--backend", "hf", "--benchmark-file", f"amc={EXAMPLE}",
            "--limit", "2", "--total-budget", "96", "--thinking-budget", "4", "--answer-budget", "4",
            "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 0
    (run,) = (tmp_path / "out").glob("*/amc/*/metrics.json")
    m = json.loads(run.read_text())
    assert m["benchmark"] == "amc" and m["grader"]["kind"] == "integer" and m["n"] == 2
    assert m["settings"]["file_sha256"] == get_benchmark("amc").content_sha256
    rows = [json.loads(x) for x in (run.parent / "samples.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in rows] == ["7", "391"]
