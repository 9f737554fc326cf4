"""scripts/gpu_bench.sh, the one-H100 measurement script, checked without a GPU: every part's
commands parse with the real CLI and name real shapes and variants, so device time is not spent
on a typo."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIM = """#!{python}
import json, sys
sys.path.insert(0, {root!r})
from harness.perf.train_bench import SHAPES, VARIANTS
from harness.cli import build_parser
assert sys.argv[1:3] == ["-m", "harness"], sys.argv
args = build_parser().parse_args(sys.argv[3:])
if args.command == "bench":
    assert set(args.shapes.split(",")) <= set(SHAPES) and set(args.variants.split(",")) <= set(VARIANTS), sys.argv
    [int(x) for x in args.seq_lens.split(",")]
with open({log!r}, "a") as f:
    f.write(json.dumps(sys.argv[3:]) + "\\n")
"""


@pytest.mark.parametrize("part", ["train-0.5B", "train-1.5B", "best", "options", "compile", "7B", "gen"])
def test_every_part_parses(tmp_path, part):
    log = tmp_path / "calls.jsonl"
    shim = tmp_path / "python"
    shim.write_text(SHIM.format(python=sys.executable, root=str(ROOT), log=str(log)))
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
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
