"""Data parallelism for one evaluation run: N engine replicas, each on its own GPUs.

vLLM's offline data parallelism for a dense model is N independent engines, each given its share of
the prompts (vLLM's examples/offline_inference/data_parallel.py: one process per rank, its devices
set before the engine starts). The run store already lets N writers share a run folder
(`--shard K/N`: disjoint problems, one samples file each, metrics over the union), so
`iwsft eval --data-parallel N` starts N worker processes of the same config with `--shard k/N` and
CUDA_VISIBLE_DEVICES set to tensor_parallel_size GPUs each, waits for all, then reads the finished
run in the parent (no model loads there: nothing is left to generate) for one summary.

Run a worker by hand: python -m harness.evaluation.parallel CONFIG_JSON   (what the parent does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, replace

from harness.core.errors import UserError
from harness.evaluation.config import EvalConfig


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use (CUDA_VISIBLE_DEVICES, else every device torch sees)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:       # no torch CUDA runtime: a CPU machine
        return []


def worker_devices(n: int, tp: int, gpus: list[str]) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each of the n workers: tp consecutive GPUs each; None on a machine
    without GPUs (the workers share the CPU, as in tests)."""
    if n < 1:
        raise UserError(f"--data-parallel must be >= 1, got {n}")
    if not gpus:
        return [None] * n
    if n * tp > len(gpus):
        raise UserError(f"--data-parallel {n} x --tensor-parallel-size {tp} needs {n * tp} GPUs, {len(gpus)} visible "
                        f"({','.join(gpus)}); use --data-parallel {max(1, len(gpus) // tp)}")
    return [",".join(gpus[k * tp:(k + 1) * tp]) for k in range(n)]


def run_data_parallel(cfg: EvalConfig, n: int) -> None:
    """Generate the whole run with n worker processes (shards 1/n .. n/n) and wait for them; a failed
    worker is one UserError line after the others end (their finished samples stay; re-run to resume)."""
    if cfg.shard is not None:
        raise UserError("--data-parallel starts its own shards; give --data-parallel N or --shard K/N, not both")
    devices = worker_devices(n, cfg.tensor_parallel_size, visible_gpus())
    procs = []
    for k, dev in enumerate(devices, start=1):
        env = dict(os.environ)
        if dev is not None:
            env["CUDA_VISIBLE_DEVICES"] = dev
        worker = replace(cfg, shard=(k, n), progress=False, summary=False)
        procs.append(subprocess.Popen([sys.executable, "-m", "harness.evaluation.parallel", json.dumps(asdict(worker))],
                                      env=env))
    try:
        codes = [p.wait() for p in procs]
    finally:                  # interrupted (Ctrl-C, SIGTERM): stop the workers too; finished samples stay
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
    failed = [k for k, c in enumerate(codes, start=1) if c != 0]
    if failed:
        raise UserError(f"--data-parallel: worker(s) {', '.join(f'{k}/{n}' for k in failed)} failed (exit "
                        f"{', '.join(str(codes[k - 1]) for k in failed)}; their messages are above); the others' samples "
                        "are kept: fix the cause and re-run the same command to finish")


def _worker(config_json: str) -> int:
    from harness.evaluation.runner import run_eval

    data = json.loads(config_json)
    data["shard"] = tuple(data["shard"])
    try:
        run_eval(EvalConfig(**data))
    except UserError as e:
        print(f"error: worker {data['shard'][0]}/{data['shard'][1]}: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
