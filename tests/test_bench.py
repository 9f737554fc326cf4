"""The training-step benchmark runs end to end at tiny shapes on CPU (the real runs need a GPU)."""

import json

from harness.cli import main


def test_bench_tiny_cpu(tmp_path, capsys):
    out = tmp_path / "train_step.json"
    assert main(["bench", "--shapes", "tiny", "--seq-lens", "48", "--steps", "1", "--warmup", "0", "--vocab", "300",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert {r["variant"] for r in res["rows"]} == {"sft", "iw-cached", "iw-periodic", "naive-ref", "naive-ref-q"}
    for r in res["rows"]:
        assert r["status"] == "ok" and r["step_time_s"] > 0 and r["w_step0"] == 1.0
    assert res["versions"]["torch"] and res["settings"]["micro_batch"] == 1


def test_bench_rejects_unknown_shape(capsys):
    assert main(["bench", "--shapes", "3B"]) == 2
