"""scripts/gpu_next_call.sh, the next one-call GPU measurement (issue 27), rehearsed on CPU so no device minute is
lost to a typo: every `iwsft` command through the real CLI parser (the cli_shim fixture), the card header and the
merging into one results.json for real, the guard that skips what is left, and at most 8 files returned."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts/gpu_next_call.sh"
ORDER = ["card", "base", "profile", "cudnn", "flex", "head", "headc", "mb", "train", "7B", "gen"]

_WRAPPER = """#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
if args[:2] == ["-m", "harness.perf.device_call"]:
    if args[2] == "profile":                         # a real profile is a model step: logged, a stand-in written
        with open({log!r}, "a") as f:
            f.write(json.dumps(["profile", *args[3:]]) + "\\n")
        out = args[args.index("--out") + 1]
        json.dump({{"by_category_s": {{}}}}, open(out, "w"))
        sys.exit(0)
    sys.exit(subprocess.call([{python!r}, *args]))   # card, merge: for real
rc = subprocess.call([{shim!r}, *args])              # `-m harness ...`: parsed by the real CLI, logged
if rc == 0 and "--out" in args:                      # what the command would write, so the merge has a file
    json.dump({{"settings": {{}}, "rows": [], "argv": args}}, open(args[args.index("--out") + 1], "w"))
sys.exit(rc)
"""


def _wrapper(tmp_path, cli_shim):
    shim, log = cli_shim
    w = tmp_path / "py"
    w.write_text(_WRAPPER.format(python=sys.executable, shim=str(shim), log=str(log)))
    w.chmod(w.stat().st_mode | stat.S_IEXEC)
    return w, log


def _run(tmp_path, py, *parts, **env):
    e = {**os.environ, "PYTHON": str(py), "NC_WORK": str(tmp_path / "w"), "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), *parts], cwd=ROOT, env=e, capture_output=True,
                          text=True, timeout=600)


def test_every_part_in_order_into_one_json(tmp_path, cli_shim):
    py, log = _wrapper(tmp_path, cli_shim)
    r = _run(tmp_path, py, NC_SHAPE="tiny", NC_SEQ="64", NC_SMALL_SHAPE="tiny", NC_SMALL_SEQ="32", NC_VOCAB="300")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "out/results.json").read_text())["parts"]
    assert list(res) == ORDER
    assert res["7B"]["status"].startswith("skipped: not an H200")          # no H200 here
    assert all(res[p]["status"] == "ok" for p in ORDER if p != "7B")
    card = res["card"]["card-header.json"]
    assert card["matmul_tflops"] > 0 and card["copy_gb_per_s"] > 0 and "torchtitan" in card["mfu_convention"]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == ["bench", "profile", "bench", "bench", "bench", "bench", "bench", "bench", "bench",
                                     "bench-train", "bench-gen"]
    assert ["--attention", "cudnn"] == calls[2][calls[2].index("--attention"):][:2]
    assert ["--attention", "flex"] == calls[3][calls[3].index("--attention"):][:2]
    assert "--fused-head" not in calls[4] and "--fused-head" in calls[5] and "--fused-head-compile" not in calls[5]
    assert {"--fused-head", "--fused-head-compile", "--compile"} <= set(calls[6])     # headc: the compiled head
    assert [c[c.index("--micro-batch") + 1] for c in calls[7:9]] == ["1", "2"]
    assert "--repeats" in calls[-1] and calls[-1][calls[-1].index("--repeats") + 1] == "2"
    outs = [c[c.index("--out") + 1] for c in calls]
    assert len(set(outs)) == len(outs)                                      # no part overwrites another's file
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["log.txt", "results.json"]   # <= 8 files back
    # the benchmark files come back out of results.json for `iwsft bench-report`
    from harness.perf.device_call import split

    names = {p.name for p in split(tmp_path / "out/results.json", tmp_path / "bench")}
    assert "base-train_step_tiny_next.json" in names and "mb-train_step_tiny_mb2.json" in names


def test_the_guard_skips_what_is_left_and_env_is_offline(tmp_path, cli_shim):
    py, log = _wrapper(tmp_path, cli_shim)
    r = _run(tmp_path, py, "card", "base", "gen", NC_GUARD="0")
    assert r.returncode == 0, r.stdout[-2000:]
    res = json.loads((tmp_path / "out/results.json").read_text())["parts"]
    assert [v["status"].split(":")[0] for v in res.values()] == ["skipped"] * 3 and not log.exists()
    text = SCRIPT.read_text()
    assert "HF_HUB_OFFLINE=1" in text and "TRANSFORMERS_OFFLINE=1" in text


def test_a_part_over_its_timeout_is_cut_and_recorded(tmp_path):
    slow = tmp_path / "py"
    slow.write_text(f"#!{sys.executable}\nimport subprocess, sys, time\n"
                    f"if 'harness.perf.device_call' in sys.argv and 'merge' in sys.argv: sys.exit(subprocess.call([{sys.executable!r}, *sys.argv[1:]]))\n"
                    "time.sleep(30)\n")
    slow.chmod(slow.stat().st_mode | stat.S_IEXEC)
    r = _run(tmp_path, slow, "base", NC_PART_TIMEOUT="2")
    assert r.returncode == 1 and "FAILED: base (timed out after 2 s)" in r.stdout
    res = json.loads((tmp_path / "out/results.json").read_text())["parts"]
    assert res["base"]["status"] == "timed out after 2 s"


def test_unknown_part_exits_2(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "o"), "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown part 'nope'" in r.stderr
