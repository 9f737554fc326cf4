"""Figure 1 (bandit) results, the q sources, and the `iwsft toy` command."""

import json
import subprocess
import sys

import pytest
import torch

from harness.cli import main
from harness.training.qsource import make_q_source
from harness.paper.figure1 import Bandit, ToyConfig, curated_dataset, run_toy


@pytest.fixture(scope="module")
def toy_result():
    return run_toy(ToyConfig())


def test_sft_converges_to_two_thirds(toy_result):
    assert toy_result["methods"]["sft"]["p_right_final"] == pytest.approx(2 / 3, abs=0.02)


@pytest.mark.parametrize("method", ["iw-sft", "iw-sft-lagged", "iw-sft-ema"])
def test_iw_sft_converges_to_right_arm(toy_result, method):
    assert toy_result["methods"][method]["p_right_final"] >= 0.98


def test_curated_data_is_two_to_one():
    data = curated_dataset(ToyConfig())
    assert float((data == 1).float().mean()) == pytest.approx(2 / 3, abs=0.01)


def test_q_sources_lag_and_ema():
    policy = Bandit()
    data = torch.tensor([0, 1, 1])
    per = make_q_source("periodic", policy, every=3)
    ema = make_q_source("ema", policy, decay=0.5)
    lag0 = make_q_source("lag0", policy)
    with torch.no_grad():
        policy.logits.copy_(torch.tensor([0.0, 2.0]))
    for step in (1, 2):
        per.update(policy, step)
    assert torch.equal(per.model.logits, torch.zeros(2))           # not refreshed before step 3
    per.update(policy, 3)
    assert torch.equal(per.model.logits, policy.logits.detach())
    ema.update(policy, 1)
    torch.testing.assert_close(ema.model.logits, torch.tensor([0.0, 1.0]))
    pol_lp = policy(data)
    assert not lag0.logprobs(pol_lp, lambda m: m(data)).requires_grad
    torch.testing.assert_close(per.logprobs(pol_lp, lambda m: m(data)), pol_lp.detach())


def test_toy_command_writes_figure(tmp_path, capsys):
    assert main(["toy", "--out", str(tmp_path), "--steps", "60"]) == 0
    result = json.loads((tmp_path / "figure1.json").read_text())
    assert set(result["methods"]) >= {"sft", "iw-sft"}
    assert len(result["methods"]["sft"]["curve"]) == 61
    assert (tmp_path / "figure1.png").stat().st_size > 10_000
    assert "p(pull-right)" in capsys.readouterr().out


def test_toy_unwritable_out_is_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = subprocess.run([sys.executable, "-m", "harness", "toy", "--out", str(blocker / "sub")], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("error: cannot write --out") and "is a file, not a folder" in r.stderr and r.stderr.count("\n") == 1
