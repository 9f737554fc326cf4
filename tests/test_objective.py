"""The iw-SFT objective: step-0 identity, gradients, hand-computed values, packing, errors."""

import math

import pytest
import torch

from harness.core.errors import UserError
from harness.training.objective import PRESETS, NonFiniteError, iw_objective, preset, token_logprobs


def _batch(lengths, pad_to, vocab=11, seed=0, left_pad=False):
    """Random logits -> per-token log-probs through token_logprobs, with a response mask whose
    first two tokens are 'prompt' (no loss) and the rest response, padded to pad_to."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    logits = torch.randn(B, pad_to, vocab, generator=g)
    targets = torch.randint(0, vocab, (B, pad_to), generator=g)
    mask = torch.zeros(B, pad_to, dtype=torch.bool)
    for i, n in enumerate(lengths):
        start = pad_to - n if left_pad else 0
        mask[i, start + 2 : start + n] = True
    return logits, targets, mask


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("lengths,pad_to,left", [([7], 7, False), ([7, 3, 12], 16, False), ([5, 9], 40, True), ([4] * 8, 4, False)])
def test_weights_exactly_one_at_step0(name, lengths, pad_to, left):
    logits, targets, mask = _batch(lengths, pad_to, left_pad=left)
    # theta = q = ref: the three log-prob tensors come from one code path on the same logits.
    pol = token_logprobs(logits.clone().requires_grad_(), targets)
    q = token_logprobs(logits.clone(), targets)
    ref = token_logprobs(logits.clone(), targets)
    out = iw_objective(pol, q, ref, mask, preset(name))
    assert torch.equal(out.seq_weights, torch.ones_like(out.seq_weights))
    assert torch.equal(out.token_weights[mask], torch.ones(int(mask.sum())))
    assert out.diagnostics["w_mean"] == 1.0 and out.diagnostics["ess_frac"] == pytest.approx(1.0)


@pytest.mark.parametrize("name", list(PRESETS))
def test_padding_and_batching_do_not_change_weights(name):
    # The same two sequences alone, batched, and batched with extra padding: identical weights.
    logits, targets, mask = _batch([9, 6], 9, seed=1)
    g = torch.Generator().manual_seed(2)
    ref = token_logprobs(logits + 0.3 * torch.randn(logits.shape, generator=g), targets)
    pol = token_logprobs(logits, targets)
    spec = preset(name)
    together = iw_objective(pol, pol, ref, mask, spec).seq_weights
    alone = torch.cat([iw_objective(pol[i : i + 1], pol[i : i + 1], ref[i : i + 1], mask[i : i + 1], spec).seq_weights for i in range(2)])
    pad = lambda x, v: torch.cat([x, torch.full((2, 5), v, dtype=x.dtype)], 1)
    padded = iw_objective(pad(pol, -3.0), pad(pol, -3.0), pad(ref, 7.0), pad(mask, False), spec).seq_weights
    if spec.self_normalize:
        pytest.skip("self-normalised weights depend on the batch by design")
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)
    torch.testing.assert_close(together, padded, rtol=0, atol=0)


def test_packed_sequences_match_unpacked():
    logits, targets, mask = _batch([8, 5], 8, seed=3)
    ref = token_logprobs(logits * 0.8, targets)
    pol = token_logprobs(logits, targets)
    spec = preset("iw-sft")
    unpacked = iw_objective(pol, pol, ref, mask, spec)
    # Pack the two rows into one row of 16 tokens with a sequence index.
    packed_mask = torch.cat([mask[0], mask[1]])[None]
    seq_index = torch.cat([torch.zeros(8, dtype=torch.long), torch.ones(8, dtype=torch.long)])[None]
    cat = lambda x: torch.cat([x[0], x[1]])[None]
    packed = iw_objective(cat(pol), cat(pol), cat(ref), packed_mask, spec, seq_index=seq_index)
    torch.testing.assert_close(packed.seq_weights, unpacked.seq_weights, rtol=0, atol=1e-6)
    torch.testing.assert_close(packed.loss, unpacked.loss)


def test_iw_gradient_is_weight_times_sft_gradient():
    """d loss_iw / d theta = sum_i w_i * d nll_i / d theta (w constant), checked with autograd."""
    torch.manual_seed(0)
    B, T, V = 3, 6, 7
    theta = torch.randn(B, T, V, requires_grad=True)
    targets = torch.randint(0, V, (B, T))
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[:, :2] = False
    ref = token_logprobs(theta.detach() + 0.5 * torch.randn(B, T, V), targets)
    pol = token_logprobs(theta, targets)
    out = iw_objective(pol, pol, ref, mask, preset("iw-sft"))
    (g_iw,) = torch.autograd.grad(out.loss, theta)
    # Per-sequence SFT gradients, combined with the reported weights.
    expected = torch.zeros_like(theta)
    n_tok = mask.sum()
    for i in range(B):
        nll_i = -(token_logprobs(theta, targets)[i][mask[i]]).sum() / n_tok
        (g_i,) = torch.autograd.grad(nll_i, theta)
        expected += out.seq_weights[i] * g_i
    torch.testing.assert_close(g_iw, expected)
    assert not torch.allclose(out.seq_weights, torch.ones(B))  # the check is not vacuous


def test_weights_carry_no_gradient_through_q():
    pol = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    q = pol * 1.0  # q from the same graph: must be detached inside
    ref = torch.tensor([[-1.5, -1.5]])
    out = iw_objective(pol, q, ref, torch.ones(1, 2, dtype=torch.bool), preset("iw-sft"))
    out.loss.backward()
    w = float(out.seq_weights[0])
    # loss = w * (1 + 2) / 2 with w constant -> dloss/dpol = -w/2 per token.
    torch.testing.assert_close(pol.grad, torch.full((1, 2), -w / 2))


# Hand-computed example: one sequence of three response tokens, rho = (0.5, -1.0, 3.0).
POL = torch.tensor([[-1.0, -2.0, -0.5]])
REF = torch.tensor([[-1.5, -1.0, -3.5]])
MASK = torch.ones(1, 3, dtype=torch.bool)
NLL = 3.5


@pytest.mark.parametrize(
    "name,overrides,w_expected",
    [
        ("sft", {}, 1.0),
        ("iw-sft", {}, math.exp((0.5 - 1.0 + 3.0) / 3)),                       # exp(mean rho) = e^(2.5/3)
        ("iw-sft", {"w_clip": (0.0, 2.0)}, 2.0),                                # clipped at the top
        ("iw-sft-paper", {}, math.exp(0.1 * (0.5 + -1.0 + math.log(1.8)))),     # ratio clip per step
        ("iw-sft-paper", {"g": "linear", "k": 1.0}, math.exp(2.5)),
        ("iw-sft-paper", {"g": "linear", "k": 1.0, "reduce": "mean"}, math.exp(2.5 / 3)),
    ],
)
def test_sequence_presets_hand_computed(name, overrides, w_expected):
    out = iw_objective(POL, POL, REF, MASK, preset(name, **overrides))
    assert float(out.seq_weights[0]) == pytest.approx(w_expected, rel=1e-6)
    assert float(out.loss) == pytest.approx(w_expected * NLL / 3, rel=1e-6)


def test_per_step_hand_computed():
    out = iw_objective(POL, POL, REF, MASK, preset("per-step"))
    tw = [math.exp(0.5), math.exp(-1.0), 1.8]   # e^0.5 = 1.65 and e^-1 = 0.37 inside [0.2, 1.8]; e^3 clipped
    assert out.token_weights[0].tolist() == pytest.approx(tw, rel=1e-6)
    assert float(out.loss) == pytest.approx((tw[0] * 1.0 + tw[1] * 2.0 + tw[2] * 0.5) / 3, rel=1e-6)
    assert out.diagnostics["clip_frac"] == pytest.approx(1 / 3)


def test_self_normalisation_and_diagnostics():
    pol = torch.tensor([[-1.0], [-1.0]])
    ref = torch.tensor([[-1.0 - math.log(3)], [-1.0]])   # rho = log 3 and 0 -> raw w = 3 and 1
    mask = torch.ones(2, 1, dtype=torch.bool)
    out = iw_objective(pol, pol, ref, mask, preset("iw-sft-paper", g="linear", k=1.0, self_normalize=True))
    assert out.seq_weights.tolist() == pytest.approx([1.5, 0.5])
    d = out.diagnostics
    assert d["w_mean"] == pytest.approx(1.0) and d["w_max"] == pytest.approx(1.5)
    assert d["ess"] == pytest.approx(4 / (1.5**2 + 0.5**2))
    assert d["logw_p50"] == pytest.approx(math.log(3) / 2)


def test_sequence_loss_norm():
    pol = torch.tensor([[-1.0, -1.0, -1.0], [-4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    out = iw_objective(pol, None, None, mask, preset("sft", loss_norm="sequences"))
    assert float(out.loss) == pytest.approx((1.0 + 4.0) / 2)
    out = iw_objective(pol, None, None, mask, preset("sft"))
    assert float(out.loss) == pytest.approx((3.0 + 4.0) / 4)


def test_non_finite_logprobs_raise_naming_the_batch():
    pol = torch.tensor([[-1.0, float("nan")]])
    with pytest.raises(NonFiniteError, match="batch 17"):
        iw_objective(pol, pol, pol, torch.ones(1, 2, dtype=torch.bool), preset("iw-sft"), batch_id=17)
    ref = torch.tensor([[-1.0, float("-inf")]])
    ok = torch.tensor([[-1.0, -1.0]])
    with pytest.raises(NonFiniteError, match="reference"):
        iw_objective(ok, ok, ref, torch.ones(1, 2, dtype=torch.bool), preset("iw-sft"), batch_id=3)
    # Masked-out positions may hold anything (e.g. padding filled with -inf).
    iw_objective(ref, ref, ref, torch.tensor([[True, False]]), preset("iw-sft"))


def test_weight_overflow_is_an_error_not_a_nan():
    pol = torch.zeros(1, 2000)
    ref = torch.full((1, 2000), -1.0)    # rho = 1 per token, summed over 2000 tokens
    with pytest.raises(NonFiniteError, match="w_clip"):
        iw_objective(pol, pol, ref, torch.ones(1, 2000, dtype=torch.bool), preset("iw-sft-paper", g="linear", k=1.0))
    out = iw_objective(pol, pol, ref, torch.ones(1, 2000, dtype=torch.bool), preset("iw-sft-paper", g="linear", k=1.0, w_clip=(0, 16)))
    assert float(out.seq_weights[0]) == 16.0 and out.diagnostics["clip_frac"] == 1.0


def test_token_logprobs_float32_and_chunking():
    torch.manual_seed(0)
    logits = torch.randn(2, 33, 50, dtype=torch.bfloat16)
    targets = torch.randint(0, 50, (2, 33))
    full = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)
    for chunk in (1, 7, 1024):
        got = token_logprobs(logits, targets, chunk_size=chunk)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, full)


def test_bad_specs_are_user_errors():
    with pytest.raises(UserError, match="unknown weighting"):
        preset("iw_sft")
    with pytest.raises(UserError, match="unknown weighting option"):
        preset("iw-sft", wclip=(0, 1))
    with pytest.raises(UserError, match="w = 1 at step 0"):
        preset("iw-sft", w_clip=(2, 16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_logprobs_gradient_matches_simple_path(dtype):
    """The memory-saving chunked path equals the plain float32 log-softmax, values and gradients."""
    torch.manual_seed(1)
    logits = torch.randn(3, 17, 40, dtype=dtype)
    targets = torch.randint(0, 40, (3, 17))
    w = torch.randn(3, 17)
    a = logits.clone().requires_grad_()
    (token_logprobs(a, targets, chunk_size=5) * w).sum().backward()
    b = logits.clone().requires_grad_()
    (torch.log_softmax(b.float(), -1).gather(-1, targets[..., None]).squeeze(-1) * w).sum().backward()
    # float32: rounding apart; bf16: the same float32 softmax cast once to bf16 in both, bitwise equal
    # (a softmax computed in bf16 would differ by ~1e-2)
    if dtype == torch.float32:
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-6)
    else:
        assert torch.equal(a.grad, b.grad), float((a.grad.float() - b.grad.float()).abs().max())
    assert a.grad.dtype == dtype
