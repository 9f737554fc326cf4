"""scripts/gpu_bench.sh, the one-H100 measurement script, checked without a GPU: every part's
commands parse with the real CLI and name real shapes and variants, so device time is not spent
on a typo."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("part", ["train-0.5B", "train-1.5B", "best", "options", "compile", "7B", "gen"])
def test_every_part_parses(tmp_path, part, cli_shim):
    shim, log = cli_shim
    r = subprocess.run(["bash", str(ROOT / "scripts/gpu_bench.sh"), part, str(tmp_path / "out")], capture_output=True,
                       text=True, env={**os.environ, "PYTHON": str(shim)}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls and all(str(tmp_path / "out") in c[c.index("--out") + 1] for c in calls)   # writes where it was told
    outs = [c[c.index("--out") + 1] for c in calls]
    assert len(set(outs)) == len(outs)                     # no part overwrites its own file


def test_unknown_part_exits_2(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "scripts/gpu_bench.sh"), "nope", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown part" in r.stderr
