"""MFU by the stated convention (harness/core/flops.py, torchtitan's): hand-computed FLOP counts, packed rows,
and the committed H200 rows recomputed by `iwsft bench-report`."""

from pathlib import Path

import pytest

from harness.core.flops import attention_flops_per_token_per_seq, dense_params, spec_peak_tflops, step_flops

ROOT = Path(__file__).resolve().parents[1]


def test_hand_computed_step_flops():
    # 2 layers, 4 heads of 8: 12 x 2 x 4 x 8 = 768 attention FLOPs per token per token of its sequence
    coeff = attention_flops_per_token_per_seq(2, 4, 8)
    assert coeff == 768
    # one 10-token row, 100 dense parameters: 6 x 100 x 10 + 768 x 10 x 10
    assert step_flops(600, coeff, [10]) == 6000 + 76800
    # the same 10 tokens packed as documents of 3 and 7: attention counts each document's own length
    assert step_flops(600, coeff, [3, 7]) == 6000 + 768 * (9 + 49)


def test_dense_params_counts_a_tied_table_once_and_drops_an_untied_input_embedding():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    def n(tied):
        cfg = Qwen2Config(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          intermediate_size=32, tie_word_embeddings=tied)
        m = Qwen2ForCausalLM(cfg)
        return sum(p.numel() for p in m.parameters()), dense_params(m)

    total, dense = n(True)
    assert dense == total                   # the shared table is the LM head: a matmul per token
    total, dense = n(False)
    assert dense == total - 100 * 16        # the input lookup is not a matmul


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H200", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                       ("NVIDIA H100 NVL", 835.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("Tesla T4", None)])
def test_spec_peaks(name, peak):
    assert spec_peak_tflops(name) == peak


def test_committed_h200_rows_recomputed_by_the_convention():
    """The best 1.5B/8k row (0.237 s/step) is 47.2% by torchtitan's convention (it read 40.5% as 6N over 790)."""
    from harness.perf.targets import load

    train, _ = load([ROOT / "reports/bench/train_step_1.5B_best.json"])
    r = next(r for r in train if r["variant"] == "iw-cached")
    assert r["_mfu_recomputed"] and r["mfu_6n_measured_peak"] == pytest.approx(0.4054, abs=1e-4)
    n, L, h, d, T = 1543714304, 28, 12, 128, 8192
    by_hand = (6 * n * T + 12 * L * h * d * T * T) / r["step_time_s"] / 989e12
    assert r["mfu"] == pytest.approx(by_hand, rel=1e-12) and round(r["mfu"], 3) == 0.472


# ---- kernel options of the bench (harness/perf/train_bench.py) ------------------------------------------

def test_cudnn_and_flex_attention_are_refused_cleanly_on_cpu(tmp_path, capsys):
    from harness.cli import main

    for att in ("cudnn", "flex"):
        out = tmp_path / f"{att}.json"
        assert main(["bench", "--shapes", "tiny", "--seq-lens", "32", "--attention", att, "--out", str(out)]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err and not out.exists()
    assert main(["bench", "--shapes", "tiny", "--seq-lens", "32", "--attention", "nope", "--out", str(tmp_path / "x")]) == 2


def test_flex_attention_forward_equals_sdpa_on_packed_rows(monkeypatch):
    """Packed rows through FlexAttention (block masks from the position ids, no [T x T] mask) give the textbook
    path's log-probs and importance weights. Forward only: torch 2.13 has no FlexAttention backward on CPU."""
    import torch
    import transformers.integrations.flex_attention as fa

    from harness.perf.train_bench import qwen2_model
    from harness.training.batching import Batch, batch_logprobs
    from harness.training.objective import iw_objective, preset

    calls = []
    real = fa.compile_friendly_flex_attention
    monkeypatch.setattr(fa, "compile_friendly_flex_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    model = qwen2_model("tiny", 300, "cpu", max_positions=256).eval()
    lens = [20, 30, 14]
    ids = torch.randint(0, 300, (1, sum(lens)))
    pos = torch.cat([torch.arange(n) for n in lens])[None]
    slot = torch.cat([torch.full((n,), j) for j, n in enumerate(lens)])[None]
    mask = (pos > 3)[:, 1:]
    b = Batch(ids, torch.ones_like(ids), mask, [0, 1, 2], lens, position_ids=pos, seq_index=slot[:, 1:])
    with torch.no_grad():
        sdpa = batch_logprobs(model, b)
        model.set_attn_implementation("flex_attention")
        flex = batch_logprobs(model, b)
    assert calls, "FlexAttention did not run"
    torch.testing.assert_close(flex, sdpa, rtol=0, atol=1e-5)
    spec = preset("iw-sft")
    ref = sdpa - 0.01 * torch.arange(sdpa.shape[1])     # a reference the policy has moved away from
    w_flex = iw_objective(flex, flex, ref, mask, spec, seq_index=b.seq_index).seq_weights
    w_sdpa = iw_objective(sdpa, sdpa, ref, mask, spec, seq_index=b.seq_index).seq_weights
    torch.testing.assert_close(w_flex, w_sdpa, rtol=0, atol=1e-5)
    assert not torch.allclose(w_sdpa, torch.ones_like(w_sdpa))


def test_micro_batch_2_rows_in_the_bench():
    from harness.perf.train_bench import bench_train_step

    res = bench_train_step(["tiny"], [32], ["sft", "iw-cached"], steps=1, warmup=0, vocab=300, micro_batch=2)
    assert res["settings"]["micro_batch"] == 2
    for r in res["rows"]:
        assert r["status"] == "ok" and r["w_step0"] == 1.0 and r["tokens_per_s"] == pytest.approx(64 / r["step_time_s"])
