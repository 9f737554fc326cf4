"""Bad input gets one line, exit code 2, no traceback and nothing half-written: training data with a
bad later row / non-UTF-8 bytes / a JSON list of non-objects, unwritable outputs of grade, curate,
bench and bench-gen (checked before any work), bad bench numbers; and files written atomically get
the permissions a plain open() would give them."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.errors import UserError

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "tiny" / "iw-sft.yaml"
GOOD = {"question": "What is 1 + 1?", "response": "er\nso 2<|im_start|>answer\nAnswer: 2", "forced_spans": [[7, 25]]}


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in err, err
    return err


def _no_work(*_a, **_k):
    raise AssertionError("the bad input should have been refused before any work")


# -- training data ------------------------------------------------------------------------------------

TRAIN_DATA = [
    # name, file contents, message fragments
    # rows 0 and 1 are good, a blank line, then row 2 (line 4) lacks the completion column
    ("later.jsonl", json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n\n" + json.dumps({"question": "What is 2+2?"}) + "\n",
     ["later.jsonl:4", "'response'", "fix or remove"]),
    ("binary.jsonl", b'\xff\xfe{"a":1}\n', ["binary.jsonl:1", "not UTF-8"]),
    ("binary.json", b'\xff\xfe[{"a":1}]\n', ["binary.json", "not UTF-8"]),
    ("ints.json", "[1,2,3]", ["ints.json", "item 0", "not a JSON object"]),
]


@pytest.mark.parametrize("name,content,fragments", TRAIN_DATA, ids=[t[0] for t in TRAIN_DATA])
def test_train_bad_rows_exit_2(tmp_path, capsys, name, content, fragments):
    data = tmp_path / name
    data.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "run"
    assert main(["train", str(RECIPE), f"dataset={data}", "max_steps=1", f"output_dir={out}"]) == 2
    _one_line_error(capsys, *fragments)
    assert not (out / "config.yaml").exists() and not (out / "final").exists()


def test_prepare_checks_every_row_and_scores():
    from harness.training.config import load_recipe
    from harness.training.data import prepare, quality_oversample

    cfg = load_recipe(str(RECIPE), ["dataset=rows"])
    with pytest.raises(UserError, match=r"dataset rows row 2: .*\['response', 'forced_spans'\]"):
        prepare([GOOD, GOOD, {"question": "q"}], None, cfg)  # refused before any tokenisation
    with pytest.raises(UserError, match=r"row 1: score_column 'score' is 'high', not a number"):
        quality_oversample([{"score": 1}, {"score": "high"}], "score", [90])


def test_jsonl_with_utf8_bom_is_read(tmp_path):
    from harness.core.io import read_jsonl

    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n\n" + json.dumps(GOOD).encode() + b"\n")
    assert read_jsonl(f) == [(1, GOOD), (3, GOOD)]


# -- grade ------------------------------------------------------------------------------------------


@pytest.fixture
def graded_input(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"response": "Answer: 4", "gold": "4"}) + "\n", encoding="utf-8")
    return f


def test_grade_non_utf8_input(tmp_path, capsys, monkeypatch):
    import harness.evaluation.grading

    monkeypatch.setattr(harness.evaluation.grading, "grade_many_detailed", _no_work)
    data = tmp_path / "binary.jsonl"
    data.write_bytes(b'\xff\xfe{"a":1}\n')
    out = tmp_path / "o.jsonl"
    assert main(["grade", "--benchmark", "aime24", "--input", str(data), "--output", str(out)]) == 2
    _one_line_error(capsys, "binary.jsonl:1", "not UTF-8")
    assert not out.exists()


def _unwritable_outputs(tmp_path: Path) -> dict[str, tuple[Path, list[str]]]:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    cases = {
        "parent-is-file": (blocker / "x.jsonl", ["afile is a file, not a folder"]),
        "grandparent-is-file": (blocker / "sub" / "x.jsonl", ["afile is a file, not a folder"]),
        "is-a-directory": (tmp_path, ["is a directory"]),
    }
    if Path("/proc/self").is_dir():
        cases["proc"] = (Path("/proc/x.jsonl"), ["no file can be created in /proc"])
    return cases


@pytest.mark.parametrize("case", ["parent-is-file", "grandparent-is-file", "is-a-directory", "proc"])
def test_grade_unwritable_output_refused_before_grading(tmp_path, capsys, monkeypatch, graded_input, case):
    import harness.evaluation.grading

    cases = _unwritable_outputs(tmp_path)
    if case not in cases:
        pytest.skip("no /proc here")
    out, fragments = cases[case]
    monkeypatch.setattr(harness.evaluation.grading, "grade_many_detailed", _no_work)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["grade", "--benchmark", "aime24", "--input", str(graded_input), "--output", str(out)]) == 2
    _one_line_error(capsys, "--output", *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before   # nothing created, no temp file left


def test_grade_output_gets_plain_open_permissions(tmp_path, capsys, graded_input):
    old = os.umask(0o022)
    try:
        out = tmp_path / "new" / "o.jsonl"
        assert main(["grade", "--benchmark", "aime24", "--input", str(graded_input), "--output", str(out)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


# -- curate -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["parent-is-file", "is-a-directory"])
def test_curate_bad_out_refused_before_sampling(tmp_path, capsys, monkeypatch, case):
    import harness.evaluation.runner

    monkeypatch.setattr(harness.evaluation.runner, "run_eval", _no_work)
    out, fragments = _unwritable_outputs(tmp_path)[case]
    assert main(["curate", "--out", str(out), "--eval-dir", str(tmp_path / "ev"), "--limit", "2"]) == 2
    _one_line_error(capsys, "--out", *fragments)
    assert not (tmp_path / "ev").exists()


def test_curate_limit_zero(tmp_path, capsys, monkeypatch):
    import harness.evaluation.runner

    monkeypatch.setattr(harness.evaluation.runner, "run_eval", _no_work)
    out = tmp_path / "c.jsonl"
    assert main(["curate", "--out", str(out), "--eval-dir", str(tmp_path / "ev"), "--limit", "0"]) == 2
    _one_line_error(capsys, "--limit must be >= 1")
    assert not out.exists()


# -- bench / bench-gen ------------------------------------------------------------------------------

BENCH = [
    (["--steps", "0"], ["--steps must be >= 1"]),
    (["--warmup", "-1"], ["--warmup must be >= 0"]),
    (["--seq-lens", "-5"], ["--seq-lens", ">= 2"]),
    (["--seq-lens", "64,1"], ["--seq-lens", ">= 2"]),
    (["--seq-lens", ","], ["--seq-lens", ">= 2"]),
    (["--vocab", "0"], ["--vocab must be >= 1"]),
    (["--out", "{tmp}/afile/x.json"], ["--out", "afile is a file, not a folder"]),
    (["--out", "{tmp}"], ["--out", "is a directory"]),
]


@pytest.mark.parametrize("extra,fragments", BENCH, ids=[" ".join(b[0]) for b in BENCH])
def test_bench_bad_args_refused_up_front(tmp_path, capsys, monkeypatch, extra, fragments):
    import harness.perf.train_bench

    monkeypatch.setattr(harness.perf.train_bench, "bench_train_step", _no_work)
    (tmp_path / "afile").write_text("")
    out = tmp_path / "b.json"
    args = ["bench", "--shapes", "tiny", "--seq-lens", "64", "--out", str(out)]
    assert main(args + [a.format(tmp=tmp_path) for a in extra]) == 2
    _one_line_error(capsys, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


BENCH_GEN = [
    (["--repeats", "0"], ["--repeats must be >= 1"]),
    (["--prompt-len", "0"], ["--prompt-len must be >= 1"]),
    (["--out", "{tmp}/afile/x.json"], ["--out", "afile is a file, not a folder"]),
    (["--out", "{tmp}"], ["--out", "is a directory"]),
]


@pytest.mark.parametrize("extra,fragments", BENCH_GEN, ids=[" ".join(b[0]) for b in BENCH_GEN])
def test_bench_gen_bad_args_refused_up_front(tmp_path, capsys, monkeypatch, extra, fragments):
    import harness.perf.gen_bench
    import harness.core.models

    monkeypatch.setattr(harness.perf.gen_bench, "bench_generation", _no_work)
    monkeypatch.setattr(harness.core.models, "load_tokenizer", _no_work)
    (tmp_path / "afile").write_text("")
    args = ["bench-gen", "--shape", "tiny", "--out", str(tmp_path / "g.json")]
    assert main(args + [a.format(tmp=tmp_path) for a in extra]) == 2
    _one_line_error(capsys, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_bench_gen_prompt_shorter_than_think_prefix(tmp_path, capsys, monkeypatch, smollm2_tokenizer):
    import harness.perf.gen_bench
    import harness.core.models

    monkeypatch.setattr(harness.perf.gen_bench, "bench_generation", _no_work)
    monkeypatch.setattr(harness.core.models, "load_tokenizer", lambda name: smollm2_tokenizer)
    out = tmp_path / "g.json"
    assert main(["bench-gen", "--shape", "tiny", "--prompt-len", "1", "--out", str(out)]) == 2
    _one_line_error(capsys, "--prompt-len 1 is shorter than the think prefix")
    assert not out.exists()


# -- atomic writer permissions ----------------------------------------------------------------------


@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_plain_open_permissions(tmp_path, umask, expected):
    from harness.core.io import atomic_write_json, atomic_write_text, write_jsonl_atomic

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "b.json", {"a": 1})
        write_jsonl_atomic(tmp_path / "sub" / "c.jsonl", [{"a": 1}])
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*tmp_path.iterdir(), tmp_path / "sub" / "c.jsonl"]
             if p.is_file()}
    assert modes == {"a.txt": expected, "b.json": expected, "c.jsonl": expected, "plain.txt": expected}


def test_atomic_write_keeps_an_existing_files_permissions(tmp_path):
    from harness.core.io import atomic_write_text

    f = tmp_path / "keep.txt"
    f.write_text("old")
    f.chmod(0o640)
    atomic_write_text(f, "new")
    assert f.read_text() == "new" and stat.S_IMODE(f.stat().st_mode) == 0o640


@pytest.mark.parametrize("override,message", [
    ("adam_beta1=2", "adam_beta1 must be in [0, 1)"), ("learning_rate=-1", "learning_rate must be > 0"),
    ("num_epochs=.nan", "num_epochs must be > 0"), ("weight_decay=-1", "weight_decay must be >= 0"),
    ("max_grad_norm=0", "max_grad_norm must be > 0"), ("q_ema_decay=5", "q_ema_decay must be in [0, 1)"),
    ("peak_tflops=0", "peak_tflops must be > 0"), ("weighting_overrides={w_clip: abc}", "wrong type"),
    ("max_steps=abc", "e.g. max_steps=2"),
])
def test_recipe_values_checked_before_anything_loads(override, message):
    """Values an optimizer or the schedule would reject only after the model loaded: refused by --check."""
    from harness.core.errors import UserError
    from harness.training.config import load_recipe

    with pytest.raises(UserError) as e:
        load_recipe(None, [override])
    assert message in str(e.value)
    assert load_recipe(None, ["max_grad_norm=.inf", "adam_beta1=0"]).max_grad_norm == float("inf")


def test_every_recipe_key_is_documented():
    from harness.training.config import FIELD_NAMES, field_docs

    docs = field_docs()
    assert [k for k in FIELD_NAMES if not docs.get(k, "").strip()] == []


def test_damaged_weights_file_is_one_line(tmp_path):
    from harness.core.models import load_model, load_tokenizer
    from tiny_models import tiny_random_model

    tiny_random_model(load_tokenizer("smollm2-135m"), hidden=16, layers=1).save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])          # a copy cut short
    with pytest.raises(UserError, match="a weights file is damaged.*copy or download the model again"):
        load_model(str(tmp_path / "m"))


@pytest.mark.parametrize("override,message", [
    ("dataset=/nonexistent/data.jsonl", "does not exist"),
    ("question_column=prompt", "has no column(s) ['prompt']"),
    ("output_dir={tmp}/afile/run", "afile is a file, not a folder; choose another output_dir"),
])
def test_train_check_validates_data_and_output_dir(tmp_path, capsys, override, message):
    (tmp_path / "afile").write_text("")
    assert main(["train", str(RECIPE), override.format(tmp=tmp_path), "--check"]) == 2
    _one_line_error(capsys, message)
    assert main(["train", str(RECIPE), f"output_dir={tmp_path / 'new' / 'run'}", "--check"]) == 0
    assert not (tmp_path / "new").exists()        # --check creates nothing


@pytest.mark.parametrize("flag", [["--dtype", "float8"], ["--backend", "vllm"]])
def test_eval_refuses_bad_dtype_or_missing_vllm_before_any_folder(tmp_path, capsys, monkeypatch, flag):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)          # not installed, whatever ran before
    out = tmp_path / "ev"
    assert main(["eval", "--model", "smollm2-135m", "--benchmarks", "arith", "--limit", "1", *flag,
                 "--out", str(out), "--no-progress"]) == 2
    _one_line_error(capsys, "float8" if "float8" in flag else "vllm")
    assert not out.exists()


def test_null_text_column_is_refused(tmp_path, capsys):
    data = tmp_path / "nulls.jsonl"
    data.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "response": None}) + "\n")
    assert main(["train", str(RECIPE), f"dataset={data}", "--check"]) == 2
    _one_line_error(capsys, "nulls.jsonl:2", "['response'] are null")


def test_failed_eval_leaves_no_run_folder(tmp_path, capsys):
    """An error raised once the run folder exists (here: 'auto' leaves no thinking budget) removes
    the folder it made; finished runs are untouched."""
    out = tmp_path / "ev"
    assert main(["eval", "--model", "smollm2-135m", "--benchmarks", "arith", "--limit", "2", "--thinking-budget",
                 "auto", "--total-budget", "128", "--out", str(out), "--no-progress"]) == 2
    _one_line_error(capsys, "raise the total budget")           # before the model loads: nothing else printed
    assert list(out.iterdir()) == []


def test_train_given_a_folder_says_a_recipe_is_a_yaml_file(capsys):
    assert main(["train", str(REPO / "recipes" / "tiny"), "--check"]) == 2
    _one_line_error(capsys, "recipes/tiny is a folder; a recipe is a YAML file, e.g. ", "recipes/tiny/iw-sft.yaml")
    assert main(["train", str(REPO / "recipes" / "tiny" / "data"), "--check"]) == 2
    _one_line_error(capsys, "recipes/tiny/data is a folder; a recipe is a YAML file (e.g. recipes/tiny/iw-sft.yaml)")


def test_a_copied_recipe_names_the_folder_its_dataset_path_is_resolved_against(tmp_path, capsys, monkeypatch):
    """A recipe's relative dataset path is looked up beside the recipe: a copy elsewhere says so."""
    monkeypatch.chdir(tmp_path)
    copy = tmp_path / "mine" / "iw-sft.yaml"
    copy.parent.mkdir()
    copy.write_text(RECIPE.read_text())
    assert main(["train", str(copy), "--check"]) == 2
    _one_line_error(capsys, "dataset file data/arith-add1-smollm2.jsonl does not exist: a recipe's relative path is "
                    f"resolved against the recipe's folder {copy.parent}/",
                    f"put the file at {copy.parent / 'data' / 'arith-add1-smollm2.jsonl'}, or give dataset=PATH")
    assert main(["train", str(copy), "dataset=elsewhere.jsonl", "--check"]) == 2      # the command line's: as before
    _one_line_error(capsys, "dataset file elsewhere.jsonl does not exist; give a .jsonl/.parquet path or a hub id")


def test_curate_with_no_correct_sample_names_options_that_exist(tmp_path, capsys, monkeypatch):
    """The fix offered is made of curate's own options (it has no level option)."""
    import harness.evaluation.runner

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "samples.jsonl").write_text(json.dumps({"problem_id": "x", "sample_index": 0, "correct": False,
                                                       "response": "no"}) + "\n")
    monkeypatch.setattr(harness.evaluation.runner, "run_eval",
                        lambda cfg: {"sums_train": {"run_dir": str(run_dir), "n": 5, "accuracy": 0.0}})
    out = tmp_path / "c.jsonl"
    assert main(["curate", "--task", "sums", "--samples", "1", "--limit", "5", "--out", str(out),
                 "--eval-dir", str(tmp_path / "ev")]) == 2
    err = _one_line_error(capsys, "no correct samples from smollm2-135m on sums (5 problems x 1); raise --samples, "
                          "raise --limit (more problems), lower --temperature (now 1) or raise --thinking-budget (now 48)")
    assert "level" not in err and not out.exists()
