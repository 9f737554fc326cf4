"""The entry point: `iwsft --help` and every sub-command's --help render (argparse %-formats help)."""

import pytest

from harness.cli import _command_modules, main


@pytest.mark.parametrize("argv", [["--help"]] + [[name.replace("_", "-"), "--help"] for name, _ in _command_modules()])
def test_help_renders(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: iwsft" in capsys.readouterr().out


def test_train_overrides_may_follow_flags(capsys):
    recipe = "recipes/tiny/iw-sft.yaml"
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert main(["train", str(root / recipe), "--check", "max_steps=1"]) == 0
    assert "max_steps: 1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["train", str(root / recipe), "--check", "max_steps=1", "--bogus"])
    assert e.value.code == 2


def test_train_check_refuses_a_model_that_resolves_to_nothing(capsys):
    """--check refuses what the real run refuses: a model path that does not exist."""
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes/tiny/iw-sft.yaml"
    assert main(["train", str(recipe), "--check", "model=/no/such/model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model '/no/such/model' resolves to nothing" in err, err


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupt_is_exit_130_even_when_a_library_wraps_it(monkeypatch, capsys, sig):
    """torch.distributed.checkpoint wraps a KeyboardInterrupt raised during a save in its own
    exception; SIGTERM (kill, Slurm) counts as an interrupt too."""
    import os
    import signal
    import time

    import harness.commands.toy as toy

    def run(args):
        try:
            os.kill(os.getpid(), getattr(signal, sig))
            time.sleep(5)
        except KeyboardInterrupt as e:
            raise RuntimeError("a library's wrapper") from e

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(toy, "run", run)
    assert main(["toy"]) == 130
    assert "interrupted; finished work is kept" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before          # handlers put back


def test_a_real_error_is_not_called_an_interrupt(monkeypatch):
    import harness.commands.toy as toy

    monkeypatch.setattr(toy, "run", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["toy"])


def test_version_and_lmeval_flags_get_the_iwsft_equivalent(capsys):
    import harness

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"iwsft {harness.__version__}"
    for argv, needle in ((["--tasks", "aime24"], "--tasks is lm-eval's flag; here: iwsft eval --benchmarks"),
                         (["eval", "--model", "m", "--output_path", "o"], "iwsft eval --out DIR"),
                         (["eval", "--model", "m", "--log_samples"], "always writes samples.jsonl"),
                         (["eval", "--verbosity=DEBUG"], "--no-progress")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err


def test_limit_takes_a_count_or_lm_evals_fraction(capsys):
    from harness.commands.eval import _limit
    from harness.evaluation.benchmarks import select
    from harness.evaluation.benchmarks._core import Problem

    problems = [Problem(id=str(i), question="q", gold="1") for i in range(30)]
    assert _limit("0.1") == 0.1 and _limit("3") == 3 and _limit("3.0") == 3
    assert len(select(problems, limit=_limit("0.1"))) == 3 and len(select(problems, limit=0.05)) == 2   # rounded up
    with pytest.raises(SystemExit):
        main(["eval", "--model", "m", "--limit", "1.5"])
    assert "a fraction is below 1" in capsys.readouterr().err


def test_benchmarks_lists_builtin_and_file_benchmarks(tmp_path, capsys):
    f = tmp_path / "mine.jsonl"
    f.write_text('{"id": "a", "question": "1+1?", "gold": "2", "grader": "integer"}\n')
    assert main(["benchmarks", "--benchmark-file", str(f)]) == 0
    out = capsys.readouterr().out
    assert "aime24" in out and "built-in" in out and "mine" in out and "file" in out


@pytest.mark.parametrize("command", [["train", "{f}", "--check"], ["reproduce-table1", "--preset", "{f}", "--out", "{d}"]])
def test_yaml_parse_error_names_its_line(tmp_path, capsys, command):
    f = tmp_path / "bad.yaml"
    f.write_text("model: a\n  bad: [1\nx: 2\n")
    assert main([a.format(f=f, d=tmp_path / "rep") for a in command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{f}:2:6: not valid YAML (mapping values are not allowed here)" in err, err


def test_eval_summary_fits_80_columns_with_its_n_column():
    from rich.console import Console

    from harness.evaluation.summary import print_summary

    def m(n, k):
        return {"accuracy": 0.5, "ci95": (0.884, 1.0), "n": n, "samples_per_problem": k, "thinking_tokens_mean": 12345.0,
                "unextracted": 123, "truncated": 45, "run_dir": "runs/eval/x"}

    c = Console(width=80, record=True)
    print_summary({"aime24": m(30, 4), "math500": m(500, 1), "gpqa_diamond": m(198, 16), "arith": {"skipped": "x"}}, c)
    text = c.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "gpqa_diamond   198 x16   50.0 [88.4, 100.0]" in text and "truncated" in text and "[95% CI]" in text


def test_eval_progress_in_a_log_is_one_line_per_event_with_this_sessions_eta(capsys, monkeypatch):
    """Not a terminal (or --no-progress): lines, not bars, at most every 30 s. Resumed at 90 of 100 samples,
    one more sample in 30 s leaves 9: ETA 270 s from this session's rate, not seconds from the stored ones."""
    import harness.evaluation.summary as summary

    clock = [1000.0]
    monkeypatch.setattr("time.time", lambda: clock[0])
    with summary.Progress(True) as p:
        t = p.add("aime24 (model)", total=100, done=90)
        clock[0] += 30
        p.update(t, 91, 5.0, 0.5)
        p.update(t, 100, 5.0, 0.5)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "aime24 (model): 90/100 samples stored, generating 10"
    assert lines[1:] == ["aime24 (model): 91/100 samples, 5.0 tok/s, acc 50.0%, elapsed 0:00:30, eta 0:04:30",
                         "aime24 (model): 100/100 samples, 5.0 tok/s, acc 50.0%, elapsed 0:00:30, eta 0:00:00"]


def test_track_shows_a_long_pass_in_a_log(monkeypatch):
    """The reference log-prob pass is never silent: in a log, a line at the start, at most every 30 s, and at the end."""
    import io

    from rich.console import Console

    from harness.core.progress import track

    clock = [0.0]
    monkeypatch.setattr("time.time", lambda: clock[0])
    buf = io.StringIO()
    for _ in track(range(4), 4, "reference log-probs", Console(file=buf, width=80), "micro-batches"):
        clock[0] += 20
    assert buf.getvalue().splitlines() == [
        "reference log-probs: 0/4 micro-batches",
        "reference log-probs: 2/4 micro-batches, 40 s elapsed, 40 s left",
        "reference log-probs: 4/4 micro-batches, 80 s elapsed, 0 s left"]


def test_library_deprecation_warnings_stay_out_of_the_logs(monkeypatch):
    import warnings

    import harness.commands.toy as toy

    def run(args):
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("'pin_memory' argument is set as true but no accelerator is found, then device pinned memory "
                      "won't be used.")
        warnings.warn("a warning of our own", UserWarning)

    monkeypatch.setattr(toy, "run", run)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["toy"]) == 0
    assert [str(w.message) for w in seen] == ["a warning of our own"]


def test_a_closed_pipe_ends_quietly():
    """`iwsft power ... | head -1`: the reader is gone before the output is written; no traceback, exit 141."""
    import os
    import subprocess
    import sys

    r, w = os.pipe()
    os.close(r)                                   # every write to w now fails with EPIPE
    p = subprocess.run([sys.executable, "-m", "harness", "power", "--seed-sd", "2", "--clusters", "100", "--diff", "3"],
                       stdout=w, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(w)
    assert p.returncode == 141 and "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


def test_eval_eta_counts_the_call_in_flight(capsys, monkeypatch):
    """Results come in bursts when a backend call ends: the first of 60 after 94 s means the call (60
    samples) is ending, so with 60 more to go the ETA is another 94 s, not 59 x 94 s."""
    import harness.evaluation.summary as summary

    clock = [0.0]
    monkeypatch.setattr("time.time", lambda: clock[0])
    with summary.Progress(True) as p:
        t = p.add("arith (model)", total=120, done=0)
        clock[0] += 94
        p.update(t, 1, 0.2, 1.0, horizon=60)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "arith (model): 1/120 samples, 0.2 tok/s, acc 100.0%, elapsed 0:01:34, eta 0:01:34", lines


@pytest.mark.parametrize("argv, needle", [
    (["eval", "--model", "m", "--limit", "abc"], "argument --limit: expected a count or a fraction below 1, not 'abc' "
                                                 "(see iwsft eval --help)"),
    (["eval"], "the following arguments are required: --model (see iwsft eval --help)"),
    (["bogus"], "argument COMMAND: invalid choice: 'bogus'"),
    ([], "the following arguments are required: COMMAND (see iwsft --help)"),
    (["eval", "--model", "m", "--bogus"], "unrecognized arguments: --bogus (see iwsft eval --help)"),
])
def test_a_usage_error_is_one_line_naming_the_help(argv, needle, capsys):
    """No usage block before the error: one line, the problem and where the usage is; exit code 2."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and out.err.startswith("error: ") and needle in out.err, out.err


def test_flags_are_never_prefix_matched(capsys):
    """argparse's default would take `--seed 3` as `--seeds 3` and start a 3-seed training job."""
    from harness.cli import main

    for argv, flag in ((["reproduce-table1", "--seed", "3"], "--seed 3"), (["power", "--clust", "9", "--seed-sd", "2"], "--clust")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and f"unrecognized arguments: {flag}" in err, err


def test_a_jobs_training_child_leaves_the_interrupted_line_to_the_job(monkeypatch, capsys):
    """reproduce-table1 runs `iwsft train` as a child: on Ctrl-C both would print the line; only the job does."""
    import harness.commands.toy as toy
    from harness.cli import main

    def run(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(toy, "run", run)
    monkeypatch.setenv("IWSFT_CHILD_OF_JOB", "1")
    assert main(["toy"]) == 130 and "interrupted" not in capsys.readouterr().err
    monkeypatch.delenv("IWSFT_CHILD_OF_JOB")
    assert main(["toy"]) == 130 and "interrupted; finished work is kept" in capsys.readouterr().err
    from harness.paper import pipeline

    assert '"IWSFT_CHILD_OF_JOB": "1"' in open(pipeline.__file__).read()      # the job marks its training child


def test_reproduce_table1_limit_fraction_is_answered(capsys):
    from harness.cli import main

    with pytest.raises(SystemExit) as e:
        main(["reproduce-table1", "--limit", "0.1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "iwsft eval --limit 0.1" in err
