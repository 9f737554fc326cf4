"""scripts/gpu_first_light.sh, the one-call GPU check, run on CPU at tiny shapes so no device minute is
lost to a typo: the train part for real (random-init model, iw-SFT, checkpoint, resume, the checks),
every other part's commands through the real CLI parser; and harness.perf.first_light's checks
fail on the runs they are meant to catch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.perf.first_light import check_train

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts/gpu_first_light.sh"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from harness.core.models import load_tokenizer

    d = tmp_path_factory.mktemp("tok")
    load_tokenizer("smollm2-135m").save_pretrained(d)
    return d


def test_train_part_runs_for_real_on_cpu(tmp_path, tokenizer_dir):
    env = {**os.environ, "PYTHON": sys.executable, "FL_WORK": str(tmp_path / "work"), "FL_TOKENIZER": str(tokenizer_dir),
           "FL_SHAPE": "tiny", "FL_STEPS": "4", "FL_MICRO_BATCH": "8", "FL_TRAIN_TIMEOUT": "600"}
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "train"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "out/first_light.json").read_text())
    assert res["ok"] and all(res["checks"].values()) and res["resumed_from"] == 2 and res["steps"] == 4
    assert res["fit_metric"] == "nll" and res["step0"]["w_max"] == 1.0
    log = (tmp_path / "out/log.txt").read_text()
    assert "resuming from" in log and "step-000002" in log     # the second run really resumed
    assert "=== train: rc 0" in log




def test_other_parts_parse_and_write_one_file_each(tmp_path, cli_shim):
    shim, log = cli_shim
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(SCRIPT), str(out), "table", "gen", "long", "options", "compile"], cwd=ROOT,
                       env={**os.environ, "PYTHON": str(shim), "FL_WORK": str(tmp_path / "w")}, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == ["bench", "bench-gen", "bench", "bench", "bench"]
    outs = [c[c.index("--out") + 1] for c in calls]
    assert len(set(outs)) == len(outs) and all(o.startswith(str(out)) for o in outs)
    assert len(outs) + 3 <= 8    # + log, first_light, eval: the device returns at most 8 files


def test_eval_without_a_trained_model_fails_and_unknown_part_exits_2(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "o"), "eval"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHON": sys.executable, "FL_WORK": str(tmp_path / "w")}, timeout=120)
    assert r.returncode == 1 and "FAILED: eval" in r.stdout
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "o"), "nope"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown part 'nope'" in r.stderr


# ---- the checks catch what they are named for -------------------------------------------------------

def _row(step, loss, nll, w=1.0):
    return {"step": step, "loss": loss, "nll": nll, "w_mean": w, "w_max": w, "logw_p05": 0.0 if w == 1.0 else 0.1,
            "logw_p95": 0.0 if w == 1.0 else 0.1, "ess_frac": 1.0, "tokens": 100, "tokens_per_s": 1000.0,
            "mfu": 0.1, "peak_mem_gb": 1.0, "step_time_s": 0.1}


def _write(path: Path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _runs(tmp_path, full, resumed, final=True):
    _write(tmp_path / "full.jsonl", full)
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True, exist_ok=True)
    if final:
        (run / "final/config.json").write_text("{}")
    _write(run / "metrics.jsonl", resumed)
    return check_train(tmp_path / "full.jsonl", run, 2)


def test_checks_pass_on_a_good_run_and_use_the_unweighted_nll(tmp_path):
    # iw-SFT's weighted loss rises with its weights while the NLL falls: the fit check reads the NLL
    full = [_row(1, 10, 10), _row(2, 12, 9, w=1.3), _row(3, 14, 8, w=1.6), _row(4, 15, 7, w=1.9)]
    res = _runs(tmp_path, full, full)
    assert res["ok"] and res["fit_metric"] == "nll" and res["resumed_max_abs_loss_diff"] == 0.0


@pytest.mark.parametrize("bad", ["step0", "fit", "resume", "missing_step", "no_final"])
def test_checks_fail_on_the_bug_they_name(tmp_path, bad):
    full = [_row(1, 10, 10), _row(2, 12, 9, w=1.3), _row(3, 14, 8, w=1.6), _row(4, 15, 7, w=1.9)]
    resumed = [dict(r) for r in full]
    if bad == "step0":
        full[0] = _row(1, 10, 10, w=1.0001)
    elif bad == "fit":
        full = [_row(i, 10, 7 + i) for i in range(1, 5)]
        resumed = full
    elif bad == "resume":
        resumed[3]["loss"] = 15.5       # 3% off: a lost optimizer state or a shifted schedule
    elif bad == "missing_step":
        resumed = resumed[:3]
    res = _runs(tmp_path, full, resumed, final=bad != "no_final")
    name = {"step0": "step0_weights_exactly_1", "fit": "loss_falls", "resume": "resumed_loss_within_2pct",
            "missing_step": "resumed_same_steps", "no_final": "final_saved"}[bad]
    assert not res["ok"] and not res["checks"][name]
    assert sum(not v for v in res["checks"].values()) == 1     # and only that one
