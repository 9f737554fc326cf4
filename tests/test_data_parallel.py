"""`iwsft eval --data-parallel N`: N worker processes (engine replicas) of one run, each its shard
k/N on its own GPUs, give the same run as one process; the GPU split and the refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.errors import UserError
from harness.evaluation.parallel import worker_devices

REPO = Path(__file__).resolve().parents[1]


def test_each_worker_gets_its_own_tensor_parallel_gpus():
    assert worker_devices(2, 2, ["0", "1", "2", "3"]) == ["0,1", "2,3"]
    assert worker_devices(4, 1, ["4", "5", "6", "7"]) == ["4", "5", "6", "7"]
    assert worker_devices(3, 2, ["0", "1", "2", "3", "4", "5", "6", "7"]) == ["0,1", "2,3", "4,5"]
    assert worker_devices(2, 1, []) == [None, None]          # a CPU machine: the workers share it
    with pytest.raises(UserError, match=r"needs 6 GPUs, 4 visible.*--data-parallel 2"):
        worker_devices(3, 2, ["0", "1", "2", "3"])
    with pytest.raises(UserError, match="must be >= 1"):
        worker_devices(0, 1, ["0"])


def _eval(out: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "harness", "eval", "--model", str(model), "--benchmarks", "arith,math500", "--limit", "5",
           "--backend", "hf", "--thinking-budget", "8", "--answer-budget", "4", "--total-budget", "256",
           "--out", str(out), "--no-progress", *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def test_data_parallel_and_shard_together_refused(tmp_path, smollm2_tokenizer):
    from tests.tiny_models import save_tiny_model_folder

    save_tiny_model_folder(tmp_path / "m", smollm2_tokenizer)
    r = _eval(tmp_path / "out", tmp_path / "m", "--data-parallel", "2", "--shard", "1/2")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--data-parallel" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_workers_give_the_run_of_one_process(tmp_path, smollm2_tokenizer):
    from tests.tiny_models import save_tiny_model_folder

    save_tiny_model_folder(tmp_path / "m", smollm2_tokenizer)
    dp = _eval(tmp_path / "dp", tmp_path / "m", "--data-parallel", "2")
    assert dp.returncode == 0, dp.stderr[-3000:]
    one = _eval(tmp_path / "one", tmp_path / "m")
    assert one.returncode == 0, one.stderr[-3000:]
    for bench in ("arith", "math500"):
        (a,) = (tmp_path / "one").glob(f"*/{bench}/*/metrics.json")
        (b,) = (tmp_path / "dp").glob(f"*/{bench}/*/metrics.json")
        assert a.parent.name == b.parent.name                     # the same run (settings hash)
        assert sorted(p.name for p in b.parent.glob("samples*.jsonl")) == ["samples.shard-1-of-2.jsonl",
                                                                          "samples.shard-2-of-2.jsonl"]
        ma, mb = json.loads(a.read_text()), json.loads(b.read_text())
        for key in ("n", "correct", "accuracy", "ci95", "thinking_tokens_mean", "weights_id"):
            assert ma[key] == mb[key], (bench, key)

        def rows(folder):
            return sorted((json.loads(l)["problem_id"], json.loads(l)["response"])
                          for f in folder.glob("samples*.jsonl") for l in f.read_text().splitlines())

        assert rows(a.parent) == rows(b.parent) and len(rows(a.parent)) == 5
    assert dp.stdout.count("arith") >= 1            # the parent printed the one summary
