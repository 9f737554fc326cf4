"""Experiment trackers (accelerate's log_with) read back: TensorBoard's event files and an MLflow
file store hold every scalar of metrics.jsonl, the log-weight histogram and the run config."""

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.core import trackers
from harness.core.errors import UserError
from harness.training.config import load_recipe
from harness.training.trainer import train


def _args(tiny_dir, tmp_path, name="run", **kw):
    base = dict(model=str(tiny_dir / "model"), dataset=str(tiny_dir / "data.jsonl"), block_size=96,
                global_batch_size=4, micro_batch_size=2, learning_rate=3e-3, warmup_ratio=0.0, max_steps=3,
                weighting="iw-sft", output_dir=str(tmp_path / name), ref_cache_dir=str(tmp_path / "ref"), seed=1)
    base.update(kw)
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in base.items()]


def _metrics(run_dir):
    return [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    return ea


def _assert_scalars_equal_metrics(ea, rows):
    keys = set().union(*(trackers.scalars(r) for r in rows))
    assert {"loss", "lr", "grad_norm", "w_mean", "ess_frac", "logw_p95", "tokens", "step_time_s"} <= keys
    assert set(ea.Tags()["scalars"]) == keys
    for key in keys:
        want = [(r["step"], r[key]) for r in rows if key in trackers.scalars(r)]
        got = [(e.step, e.value) for e in ea.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in want], key
        for (_, g), (_, w) in zip(got, want):
            assert g == pytest.approx(w, rel=1e-6, abs=1e-30), key     # float32 in the event file


def test_tensorboard_holds_every_scalar_the_histogram_and_the_config(tiny_dir, tmp_path):
    train(load_recipe(None, _args(tiny_dir, tmp_path, log_with=["tensorboard"], tracker_project="proj")))
    rows = _metrics(tmp_path / "run")
    ea = _events(tmp_path / "run" / "tb" / "proj")
    _assert_scalars_equal_metrics(ea, rows)
    hist = ea.Histograms("log_w")
    assert [h.step for h in hist] == [1, 2, 3]
    first = hist[0].histogram_value
    assert first.num == 4 and first.min == first.max == 0.0           # every weight exactly 1 at step 0
    assert hist[-1].histogram_value.max != 0.0                         # and the weights moved later
    (hparams,) = (tmp_path / "run" / "tb" / "proj").glob("*/hparams.yml")
    saved = yaml.safe_load(hparams.read_text())
    assert saved["weighting"] == "iw-sft" and saved["global_batch_size"] == 4
    assert json.loads(saved["weighting_overrides"]) == {}               # lists and dicts as JSON text


def test_tensorboard_after_a_resume_equals_metrics_jsonl(tiny_dir, tmp_path):
    args = _args(tiny_dir, tmp_path, max_steps=4, save_every=2, log_with="tensorboard")
    train(load_recipe(None, args))
    shutil.rmtree(tmp_path / "run" / "final")          # as if killed after step 4, before the final save
    train(load_recipe(None, args))                      # resumes from step 2: steps 3 and 4 are logged again
    rows = _metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    _assert_scalars_equal_metrics(_events(tmp_path / "run" / "tb" / "iwsft"), rows)


def test_mlflow_file_store_holds_metrics_and_params(tiny_dir, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")     # mlflow 3 keeps the file store behind this switch
    train(load_recipe(None, _args(tiny_dir, tmp_path, log_with="mlflow", tracker_project="proj")))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("proj").experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["weighting"] == "iw-sft" and run.data.params["max_steps"] == "3"
    rows = _metrics(tmp_path / "run")
    keys = set().union(*(trackers.scalars(r) for r in rows))
    assert set(run.data.metrics) == keys                        # no histogram: MLflow has none, skipped quietly
    for key in keys:
        hist = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        want = [(r["step"], r[key]) for r in rows if key in trackers.scalars(r)]
        assert [s for s, _ in hist] == [s for s, _ in want]
        assert [v for _, v in hist] == pytest.approx([v for _, v in want], rel=1e-12)


def test_mlflow_resume_continues_the_same_run(tiny_dir, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    args = _args(tiny_dir, tmp_path, max_steps=4, save_every=2, log_with="mlflow", tracker_project="proj")
    train(load_recipe(None, args))
    first = json.loads((tmp_path / "run" / "trackers.json").read_text())["mlflow"]
    shutil.rmtree(tmp_path / "run" / "final")          # as if killed after step 4, before the final save
    train(load_recipe(None, args))                      # resumes from step 2
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("proj").experiment_id])   # one run, not two
    assert run.info.run_id == first and run.info.status == "FINISHED"
    rows = _metrics(tmp_path / "run")
    hist = client.get_metric_history(run.info.run_id, "loss")
    assert sorted({m.step for m in hist}) == [1, 2, 3, 4]
    last = {m.step: m.value for m in sorted(hist, key=lambda m: m.timestamp)}   # the resumed run's values last
    assert [last[s] for s in (1, 2, 3, 4)] == pytest.approx([r["loss"] for r in rows], rel=1e-12)


def _not_installed():
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    missing = sorted(set(LOGGER_TYPE_TO_CLASS) - {str(t) for t in get_available_trackers()})
    if not missing:
        pytest.skip("every tracker accelerate knows is installed here")
    return missing[0]


@pytest.mark.parametrize("value,message", [("NOT_INSTALLED", "not installed: pip install"), ("tensorbord", "not a tracker")])
def test_a_tracker_not_installed_or_unknown_is_one_line_and_nothing_written(tiny_dir, tmp_path, capsys, value, message):
    value = _not_installed() if value == "NOT_INSTALLED" else value
    rc = main(["train", "-", *_args(tiny_dir, tmp_path, log_with=f"tensorboard,{value}")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and value in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "ref").exists()


def test_log_with_parsing():
    assert trackers.parse("tensorboard, MLflow,tensorboard") == ["tensorboard", "mlflow"]
    cfg = load_recipe(None, ["log_with=tensorboard", "tensorboard=true"])
    assert cfg.log_with == ["tensorboard"] and cfg.trackers() == ["tensorboard"]
    assert load_recipe(None, ["log_with=[tensorboard]"]).log_with == ["tensorboard"]
    assert load_recipe(None, ["tensorboard=true"]).trackers() == ["tensorboard"]     # the deprecated switch
    with pytest.raises(UserError, match="tracker names"):
        load_recipe(None, ["log_with=[1]"])
    assert trackers.scalars({"step": 3, "loss": 1.5, "mfu": None, "ok": True, "x": math.nan, "n": 4}) == {"loss": 1.5, "n": 4}


# ------------------------------------------------------------------------------ evaluation


def test_eval_logs_each_benchmarks_metrics_to_tensorboard(tmp_path, monkeypatch):
    from harness.evaluation import runner as ev
    from test_evaluate import FakeEngine

    monkeypatch.setattr(ev, "Engine", FakeEngine)
    argv = ["eval", "--model", "fake", "--benchmarks", "aime24", "--limit", "1", "--samples", "4", "--temperature", "0.7",
            "--out", str(tmp_path), "--no-progress", "--log-with", "tensorboard", "--tracker-project", "p"]
    assert main(argv) == 0
    m = json.loads(next((tmp_path / "fake" / "aime24").glob("*/metrics.json")).read_text())
    ea = _events(tmp_path / "tb" / "p" / "fake")
    got = {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}
    assert got["aime24/accuracy"] == [(0, m["accuracy"])] and m["accuracy"] == 0.25
    assert got["aime24/pass_at_4"] == [(0, 1.0)] and got["aime24/n"] == [(0, 1)]
    assert got["aime24/ci95_low"][0][1] == pytest.approx(m["ci95"][0], rel=1e-6)


def test_eval_with_a_tracker_not_installed_stops_before_generating(tmp_path, monkeypatch, capsys):
    from harness.evaluation import runner as ev
    from test_evaluate import FakeEngine

    monkeypatch.setattr(ev, "Engine", FakeEngine)
    name, calls = _not_installed(), FakeEngine.calls
    rc = main(["eval", "--model", "fake", "--benchmarks", "aime24", "--limit", "1", "--out", str(tmp_path / "o"),
               "--no-progress", "--log-with", name])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"--log-with names {name}" in err and len(err.splitlines()) == 1
    assert FakeEngine.calls == calls and not (tmp_path / "o").exists()


def test_eval_step_of_a_checkpoint():
    from harness.evaluation.tracking import step_of

    assert step_of("runs/x/checkpoints/step-000060") == 60 and step_of("runs/x/final") == 0 and step_of("org/m") == 0
