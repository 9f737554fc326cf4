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


@pytest.mark.parametrize("name,overrides", [(n, {}) for n in PRESETS] + [("iw-sft", {"self_normalize": True})])
def test_padding_and_batching_do_not_change_weights(name, overrides):
    # The same two sequences alone, batched, and batched with extra padding: identical weights
    # (self-normalised ones are divided by the batch's mean: alone, each is 1 by design).
    logits, targets, mask = _batch([9, 6], 9, seed=1)
    g = torch.Generator().manual_seed(2)
    ref = token_logprobs(logits + 0.3 * torch.randn(logits.shape, generator=g), targets)
    pol = token_logprobs(logits, targets)
    spec = preset(name, **overrides)
    together = iw_objective(pol, pol, ref, mask, spec).seq_weights
    alone = torch.cat([iw_objective(pol[i : i + 1], pol[i : i + 1], ref[i : i + 1], mask[i : i + 1], spec).seq_weights for i in range(2)])
    pad = lambda x, v: torch.cat([x, torch.full((2, 5), v, dtype=x.dtype)], 1)
    padded = iw_objective(pad(pol, -3.0), pad(pol, -3.0), pad(ref, 7.0), pad(mask, False), spec).seq_weights
    torch.testing.assert_close(together, padded, rtol=0, atol=0)
    if spec.self_normalize:
        raw = iw_objective(pol, pol, ref, mask, preset(name)).seq_weights
        torch.testing.assert_close(together, raw / raw.mean(), rtol=1e-6, atol=0)
        assert float(together.mean()) == pytest.approx(1.0, abs=1e-6) and alone.tolist() == [1.0, 1.0]
        assert not torch.allclose(together, raw)                # the batch's mean was not 1
    else:
        torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)


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


# --- Pinned by hand for mutation testing (docs/testing.md#survivors): every value below is worked out
# from the method (docs/method.md), not read back from the code.

def test_presets_are_the_method():
    """Each preset's every field, as the method gives it (released code, paper text, Table 1's per-step row)."""
    from harness.training.objective import WeightSpec
    assert list(PRESETS) == ["sft", "iw-sft", "iw-sft-paper", "per-step"]
    assert preset("sft") == WeightSpec("sft", "none", "mean", "linear", 1.0, (0.2, 1.8), None, False, (0.2, 1.8), "tokens")
    # released code: clamp(exp(mean rho), 0, 16), no 0.1, no per-step clip, no batch normalisation
    assert preset("iw-sft") == WeightSpec("iw-sft", "sequence", "mean", "linear", 1.0, (0.2, 1.8), (0.0, 16.0), False, (0.2, 1.8), "tokens")
    # paper text: exp(sum_t 0.1 * clip of the ratio to (1 - 0.8, 1 + 0.8)); beta_min/max unpublished
    assert preset("iw-sft-paper") == WeightSpec("iw-sft-paper", "sequence", "sum", "clip", 0.1, (0.2, 1.8), None, False, (0.2, 1.8), "tokens")
    # per-step branch: each token's NLL times clamp(exp(rho_t), 0.2, 1.8)
    assert preset("per-step") == WeightSpec("per-step", "token", "mean", "linear", 1.0, (0.2, 1.8), None, False, (0.2, 1.8), "tokens")


def test_preset_overrides_and_their_errors():
    assert preset("iw-sft", w_clip=[0, 8]).w_clip == (0, 8)              # YAML lists become tuples
    assert preset("iw-sft", k=2.0) == preset("iw-sft", k=2.0) and preset("iw-sft", k=2.0).k == 2.0
    with pytest.raises(UserError, match=r"^unknown weighting 'iw_sft'; choose one of sft, iw-sft, iw-sft-paper, per-step$"):
        preset("iw_sft")
    with pytest.raises(UserError, match=r"^unknown weighting option\(s\) \['a', 'wclip'\]; valid: \['g', 'g_clip', 'k', 'level', 'loss_norm', 'name', "):
        preset("iw-sft", wclip=(0, 1), a=1)


@pytest.mark.parametrize("field,value,message", [
    ("level", "tokens", r"^weighting level 'tokens' is not one of none, sequence, token$"),
    ("reduce", "max", r"^weighting reduce 'max' is not one of mean, sum$"),
    ("g", "tanh", r"^weighting g 'tanh' is not one of linear, clip$"),
    ("loss_norm", "batch", r"^loss_norm 'batch' is not one of tokens, sequences$"),
    ("g_clip", (0.0, 1.8), r"^g_clip \(0.0, 1.8\) must satisfy 0 < lo <= 1 <= hi so that w = 1 at step 0$"),   # log 0
    ("g_clip", (1.1, 1.8), r"^g_clip "),
    ("g_clip", (0.2, 0.9), r"^g_clip "),
    ("token_clip", (-0.1, 1.8), r"^token_clip \(-0.1, 1.8\) must satisfy 0 <= lo <= 1 <= hi so that w = 1 at step 0$"),
    ("token_clip", (1.1, 1.8), r"^token_clip "),
    ("token_clip", (0.2, 0.9), r"^token_clip "),
    ("w_clip", (-1.0, 16.0), r"^w_clip \(-1.0, 16.0\) must satisfy 0 <= lo <= 1 <= hi so that w = 1 at step 0$"),
    ("w_clip", (2.0, 16.0), r"^w_clip "),
    ("w_clip", (0.0, 0.5), r"^w_clip "),
])
def test_bad_spec_fields_name_the_field_and_the_fix(field, value, message):
    with pytest.raises(UserError, match=message):
        preset("iw-sft", **{field: value})


def test_spec_bounds_that_keep_w_1_at_step0_are_accepted():
    for kw in [{"g_clip": (1.0, 1.0)}, {"token_clip": (0.0, 1.0)}, {"token_clip": (1.0, 1.0)}, {"w_clip": (0.0, 1.0)},
               {"w_clip": (1.0, 1.0)}, {"self_normalize": True}]:
        preset("iw-sft", **kw)
    with pytest.raises(UserError, match=r"^self_normalize applies to sequence weights; weighting level 'token' would ignore it: "
                                        r"drop self_normalize from weighting_overrides$"):
        preset("per-step", self_normalize=True)
    with pytest.raises(UserError, match=r"level 'none'"):
        preset("sft", self_normalize=True)


# Four rows of two positions, policy log-prob -1 on every response token (nll 1):
# row 0: one token, rho = -1 -> w = e^-1 = 0.37; row 1: one token, rho = 0 -> w = 1;
# row 2: two tokens, rho = (1, 1) -> w = e; row 3: no response token -> w = 1 (log w = 0).
MASK4 = torch.tensor([[True, False], [True, False], [True, True], [False, False]])
POL4 = torch.full((4, 2), -1.0)
REF4 = torch.tensor([[0.0, 0.0], [-1.0, 0.0], [-2.0, -2.0], [0.0, 0.0]])


@pytest.mark.parametrize("w_clip", [(1.0, 16.0), (0.0, 1.0), (1.0, 1.0)])
def test_weights_on_a_bound_count_at_the_clip(w_clip):
    """At step 0 every log w is exactly 0: with a bound at 1 (lower, upper or both) every weight sits on
    it, and the logged fraction at the clip says so (1.0, as `iwsft train` logs with w_clip [0, 1])."""
    out = iw_objective(POL4, POL4, POL4, MASK4, preset("iw-sft", w_clip=w_clip))
    d = out.diagnostics
    assert (d["clip_frac"], d["clip_count"], d["clip_units"]) == (1.0, 4, 4) and out.seq_weights.tolist() == [1.0] * 4


def test_overall_clip_both_sides_counts_and_loss():
    out = iw_objective(POL4, POL4, REF4, MASK4, preset("iw-sft", w_clip=(0.5, 2.0)), batch_id=1)
    assert out.seq_weights.tolist() == pytest.approx([0.5, 1.0, 2.0, 1.0], rel=1e-6)
    assert out.log_weights.tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)       # before the clip
    torch.testing.assert_close(out.token_weights, torch.tensor([[0.5, 0.0], [1.0, 0.0], [2.0, 2.0], [0.0, 0.0]]))
    assert float(out.loss_sum) == pytest.approx(0.5 + 1.0 + 2.0 * 2)
    assert float(out.normalizer) == 4.0 and float(out.loss) == pytest.approx(5.5 / 4)
    d = out.diagnostics
    assert (d["clip_frac"], d["clip_count"], d["clip_units"]) == (0.5, 2, 4)                # rows 0 and 2 at the clip
    assert (d["w_min"], d["w_max"]) == pytest.approx((0.5, 2.0))
    # per-sequence normalisation: mean over the 3 sequences with tokens of mean nll times w
    out = iw_objective(POL4, POL4, REF4, MASK4, preset("iw-sft"))                               # (0, 16): nothing at the clip
    assert out.seq_weights.tolist() == pytest.approx([1 / math.e, 1.0, math.e, 1.0], rel=1e-6)
    assert (out.diagnostics["clip_frac"], out.diagnostics["clip_count"]) == (0.0, 0)
    out = iw_objective(POL4, POL4, REF4, MASK4, preset("iw-sft", w_clip=(0.5, 2.0), loss_norm="sequences"))
    assert float(out.normalizer) == 3.0 and float(out.loss) == pytest.approx((0.5 + 1.0 + 2.0) / 3)
    assert float(out.loss_sum) == pytest.approx(3.5)


def test_self_normalisation_over_the_batch_or_the_step():
    spec = preset("iw-sft", w_clip=(0.5, 2.0), self_normalize=True)
    out = iw_objective(POL4, POL4, REF4, MASK4, spec)
    mean = (0.5 + 1.0 + 2.0 + 1.0) / 4                                                        # of the clipped weights
    assert out.seq_weights.tolist() == pytest.approx([0.5 / mean, 1 / mean, 2 / mean, 1 / mean], rel=1e-6)
    out = iw_objective(POL4, POL4, REF4, MASK4, spec, step_log_mean=math.log(2.0))            # the trainer's step mean
    assert out.seq_weights.tolist() == pytest.approx([0.25, 0.5, 1.0, 0.5], rel=1e-6)
    out = iw_objective(POL4, POL4, REF4, MASK4, preset("iw-sft", w_clip=(0.5, 2.0)), step_log_mean=math.log(2.0))
    assert out.seq_weights.tolist() == pytest.approx([0.5, 1.0, 2.0, 1.0], rel=1e-6)         # ignored without self_normalize


def test_sequence_log_weights_clipped_detached_float32():
    from harness.training.objective import sequence_log_weights
    q = POL4.clone().requires_grad_()
    lw = sequence_log_weights(q, REF4, MASK4, preset("iw-sft", w_clip=(0.5, 2.0)))
    assert lw.tolist() == pytest.approx([math.log(0.5), 0.0, math.log(2.0), 0.0], abs=1e-6) and not lw.requires_grad
    assert sequence_log_weights(q, REF4, MASK4, preset("iw-sft-paper", g="linear", k=1.0)).tolist() == pytest.approx([-1.0, 0.0, 2.0, 0.0], abs=1e-6)
    assert torch.equal(sequence_log_weights(q, REF4, MASK4.long(), preset("iw-sft")), sequence_log_weights(q, REF4, MASK4, preset("iw-sft")))
    # rho in float32 from bf16 inputs: -2^-9 - (-1) = 0.998046875 exactly (bf16 arithmetic would round it to 1)
    qb, rb = torch.tensor([[-2.0**-9]], dtype=torch.bfloat16), torch.tensor([[-1.0]], dtype=torch.bfloat16)
    assert float(sequence_log_weights(qb, rb, torch.ones(1, 1, dtype=torch.bool), preset("iw-sft"))[0]) == 0.998046875
    packed = sequence_log_weights(torch.zeros(1, 4), torch.tensor([[-1.0, -1.0, 1.0, 1.0]]), torch.ones(1, 4, dtype=torch.bool),
                                  preset("iw-sft"), seq_index=torch.tensor([[0, 0, 1, 1]]))
    assert packed.tolist() == pytest.approx([1.0, -1.0])


def test_rho_and_nll_in_float32_from_bf16():
    qb, rb = torch.tensor([[-2.0**-9]], dtype=torch.bfloat16), torch.tensor([[-1.0]], dtype=torch.bfloat16)
    out = iw_objective(qb, qb, rb, torch.ones(1, 1, dtype=torch.bool), preset("iw-sft"))
    assert float(out.log_weights[0]) == 0.998046875
    pol = torch.tensor([[-256.0, -1.0]], dtype=torch.bfloat16)                                # 257 is not a bf16 number
    out = iw_objective(pol, None, None, torch.ones(1, 2, dtype=torch.bool), preset("sft"))
    assert out.loss.dtype == torch.float32 and float(out.loss) == 128.5


def test_paper_clip_lower_bound_hand_computed():
    # rho = (-2, 0.5): ratio e^-2 = 0.135 is clipped up to 0.2, e^0.5 = 1.65 is inside; w = exp(0.1 * (log 0.2 + 0.5)).
    out = iw_objective(torch.tensor([[-3.0, -1.0]]), torch.tensor([[-3.0, -1.0]]), torch.tensor([[-1.0, -1.5]]),
                       torch.ones(1, 2, dtype=torch.bool), preset("iw-sft-paper"))
    assert float(out.seq_weights[0]) == pytest.approx(math.exp(0.1 * (math.log(0.2) + 0.5)), rel=1e-6)
    assert out.diagnostics["clip_frac"] == 0.0 and out.diagnostics["clip_count"] == 0   # no overall clip in this preset


def test_per_step_lower_clip_empty_row_and_counts():
    # row 0: rho = (-2, 0) -> token weights (0.2 clipped up from e^-2, 1); row 1: no response token;
    # row 2: one token, rho = 3 -> 1.8 (clipped down from e^3).
    pol = torch.full((3, 2), -1.0)
    ref = torch.tensor([[1.0, -1.0], [0.0, 0.0], [-4.0, 0.0]])
    mask = torch.tensor([[True, True], [False, False], [True, False]])
    out = iw_objective(pol, pol, ref, mask, preset("per-step"))
    torch.testing.assert_close(out.token_weights, torch.tensor([[0.2, 1.0], [0.0, 0.0], [1.8, 0.0]]))
    assert out.seq_weights.tolist() == pytest.approx([0.6, 1.0, 1.8], rel=1e-6)             # mean token weight; 1 when empty
    assert out.log_weights.tolist() == pytest.approx([-1.0, 0.0, 3.0])                       # mean rho; 0 when empty
    assert float(out.loss) == pytest.approx((0.2 + 1.0 + 1.8) / 3, rel=1e-6)
    d = out.diagnostics
    assert (d["clip_frac"], d["clip_count"], d["clip_units"]) == (pytest.approx(2 / 3), 2, 3)
    # a ratio exactly at a bound is left unchanged by the clip, so it is not counted as clipped
    out = iw_objective(pol, pol, pol, mask, preset("per-step", token_clip=(1.0, 1.0)))
    assert (out.diagnostics["clip_frac"], out.diagnostics["clip_count"]) == (0.0, 0)
    out = iw_objective(pol, pol, ref, mask, preset("per-step"), step_log_mean=5.0)            # token level: no normaliser
    assert out.token_weights[0].tolist() == pytest.approx([0.2, 1.0], rel=1e-6)


def test_sft_weights_and_diagnostics_are_trivial():
    out = iw_objective(POL4, None, REF4, MASK4, preset("sft"))
    assert out.seq_weights.tolist() == [1.0] * 4 and out.log_weights.tolist() == [0.0] * 4
    assert out.token_weights.tolist() == [[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    assert (out.diagnostics["clip_frac"], out.diagnostics["clip_count"], out.diagnostics["clip_units"]) == (0.0, 0, 0)
    assert float(out.loss) == 1.0 and float(out.normalizer) == 4.0


@pytest.mark.parametrize("name", list(PRESETS))
def test_batch_without_response_tokens_has_zero_loss(name):
    pol = torch.full((2, 3), -1.0, requires_grad=True)
    for seq_index in (None, torch.zeros(2, 3, dtype=torch.long)):
        out = iw_objective(pol, pol, pol, torch.zeros(2, 3, dtype=torch.bool), preset(name), seq_index=seq_index)
        assert float(out.loss.detach()) == 0.0 and float(out.normalizer) == 0.0
        if seq_index is None:                                                                  # two empty rows: weight 1, nothing clipped
            assert (out.diagnostics["w_mean"], out.diagnostics["clip_frac"], out.diagnostics["clip_count"]) == (1.0, 0.0, 0)
    out.loss.backward()
    assert torch.equal(pol.grad, torch.zeros(2, 3))
    one = iw_objective(pol, pol, pol, torch.tensor([[False, True, False], [False] * 3]), preset(name))
    assert float(one.loss.detach()) == 1.0 and float(one.normalizer) == 1.0                             # one token: nll 1 / 1


def test_packed_rows_sharing_sequence_numbers():
    # Two rows each packing sequences 0 and 1 (row 1 numbers them 0 and 2): four sequences, in (row, index) order.
    pol = torch.zeros(2, 4)
    ref = torch.tensor([[-1.0, -1.0, 1.0, 1.0], [-0.5, -0.5, 0.0, 0.0]])                      # rho = -ref
    mask = torch.ones(2, 4, dtype=torch.bool)
    seq_index = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 2]])
    out = iw_objective(pol, pol, ref, mask, preset("iw-sft"), seq_index=seq_index)
    assert out.seq_weights.tolist() == pytest.approx([math.e, 1 / math.e, math.exp(0.5), 1.0], rel=1e-6)
    # per-sequence loss over the four packed sequences (policy nll 1 per token; q gives the weights)
    out = iw_objective(torch.full((2, 4), -1.0), pol, ref, mask, preset("iw-sft", loss_norm="sequences"), seq_index=seq_index)
    assert float(out.normalizer) == 4.0 and float(out.loss) == pytest.approx((math.e + 1 / math.e + math.exp(0.5) + 1.0) / 4, rel=1e-6)
    from harness.training.objective import loss_normalizer
    assert loss_normalizer(mask, preset("sft", loss_norm="sequences"), seq_index) == 4
    mask[1, 2:] = False
    assert loss_normalizer(mask, preset("sft", loss_norm="sequences"), seq_index) == 3
    assert loss_normalizer(mask.long(), preset("sft", loss_norm="sequences"), seq_index) == 3
    assert loss_normalizer(MASK4.long(), preset("sft", loss_norm="sequences")) == 3             # the empty row is no sequence
    assert loss_normalizer(MASK4, preset("sft")) == 4
    with pytest.raises(UserError, match=r"^seq_index shape \(1, 3\) differs from mask shape \(2, 4\)$"):
        iw_objective(pol, pol, ref, mask, preset("iw-sft"), seq_index=torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("seq_index", [[[0, 0, 3, 3], [0, 0, 1, 1]],      # the largest index in the FIRST row
                                       [[0, 0, 1, 1], [0, 0, 3, 3]],      # ... and in the last
                                       [[5, 5, 5, 5], [0, 0, 1, 1]]])     # a row of one high-numbered sequence
def test_packed_sequence_keys_are_unique_whichever_row_holds_the_largest_index(seq_index):
    """The packing key is row * (largest index over ALL rows + 2) + index + 1: a key sized from one row
    only makes sequences of two rows collide (row 0's sequence 3 and row 1's sequence 0 would merge)."""
    seq_index = torch.tensor(seq_index)
    pol = torch.zeros(2, 4)
    ref = torch.tensor([[-1.0, -1.0, 1.0, 1.0], [-0.5, -0.5, 0.0, 0.0]])                      # rho = -ref
    mask = torch.ones(2, 4, dtype=torch.bool)
    out = iw_objective(pol, pol, ref, mask, preset("iw-sft"), seq_index=seq_index)
    # one weight per (row, sequence), in (row, index) order: mean rho over each sequence's tokens
    want = []
    for r in range(2):
        for s in sorted(set(seq_index[r].tolist())):
            want.append(math.exp(float(-ref[r][seq_index[r] == s].mean())))
    assert out.seq_weights.tolist() == pytest.approx(want, rel=1e-6)
    from harness.training.objective import loss_normalizer
    assert loss_normalizer(mask, preset("sft", loss_norm="sequences"), seq_index) == len(want)


def test_integer_mask_is_a_boolean_mask():
    a = iw_objective(POL4, POL4, REF4, MASK4.long(), preset("iw-sft", w_clip=(0.5, 2.0)))
    b = iw_objective(POL4, POL4, REF4, MASK4, preset("iw-sft", w_clip=(0.5, 2.0)))
    assert torch.equal(a.token_weights, b.token_weights) and float(a.loss) == float(b.loss)


def test_error_messages_name_the_tensor_batch_and_rows():
    ok = torch.full((10, 2), -1.0)
    nan = ok.clone()
    nan[:, 1] = float("nan")
    mask = torch.ones(10, 2, dtype=torch.bool)
    for args, name in [((nan, ok, ok), "policy"), ((ok, nan, ok), "q"), ((ok, ok, nan), "reference")]:
        with pytest.raises(NonFiniteError, match=rf"^non-finite {name} log-probs in batch 17 \(rows \[0, 1, 2, 3, 4, 5, 6, 7\]\): "
                                                  r"check the model dtype \(use float32 log-softmax\) and the data for empty or corrupted sequences$"):
            iw_objective(*args, mask, preset("iw-sft"), batch_id=17)
    with pytest.raises(NonFiniteError, match=r"in batch \? \(rows \[2\]\)"):                       # no batch id given
        iw_objective(ok, ok, nan, torch.tensor([[True, False]] * 2 + [[True, True]] + [[True, False]] * 7), preset("iw-sft"))
    for q, ref in [(None, ok), (ok, None), (None, None)]:
        with pytest.raises(UserError, match=r"^weighting 'per-step' needs q and reference log-probs$"):
            iw_objective(ok, q, ref, mask, preset("per-step"))
    with pytest.raises(NonFiniteError, match=r"^importance weights overflowed in batch 5 \(max log w = 2000.0\): "
                                             r"set w_clip or self_normalize in the recipe's weighting$"):
        iw_objective(torch.zeros(1, 2000), torch.zeros(1, 2000), torch.full((1, 2000), -1.0), torch.ones(1, 2000, dtype=torch.bool),
                     preset("iw-sft-paper", g="linear", k=1.0), batch_id=5)


def test_weight_diagnostics_hand_computed():
    from harness.training.objective import weight_diagnostics
    d = weight_diagnostics(torch.tensor([1.0, 3.0]), torch.tensor([0.0, math.log(3)]), 0.25)
    assert d == pytest.approx({"w_mean": 2.0, "w_max": 3.0, "w_min": 1.0, "logw_p05": 0.05 * math.log(3), "logw_p50": 0.5 * math.log(3),
                               "logw_p95": 0.95 * math.log(3), "ess": 16 / 10, "ess_frac": 0.8, "clip_frac": 0.25})
    assert weight_diagnostics(torch.full((2,), 0.25), torch.full((2,), math.log(0.25)))["ess"] == pytest.approx(2.0)   # sum w^2 < 1
    d = weight_diagnostics(torch.ones(21), torch.arange(21.0))
    assert (d["logw_p05"], d["logw_p50"], d["logw_p95"], d["clip_frac"]) == (1.0, 10.0, 19.0, 0.0)
    assert weight_diagnostics(torch.ones(0), torch.zeros(0)) == {}
    assert weight_diagnostics(torch.tensor([2.0]), torch.tensor([math.log(2)]))["ess"] == 1.0


def test_token_logprobs_edges():
    logits = torch.tensor([[[0.0, math.log(3.0)], [math.log(3.0), 0.0]]])                   # p = (1/4, 3/4) and (3/4, 1/4)
    got = token_logprobs(logits, torch.tensor([[1, -100]]))                                  # -100 (ignore index) read as 0
    torch.testing.assert_close(got, torch.tensor([[math.log(0.75), math.log(0.75)]]))
    torch.testing.assert_close(token_logprobs(logits[:, :1], torch.tensor([[0]])), torch.tensor([[math.log(0.25)]]))
    empty = token_logprobs(torch.zeros(0, 3, 5, dtype=torch.bfloat16), torch.zeros(0, 3, dtype=torch.long))
    assert empty.shape == (0, 3) and empty.dtype == torch.float32


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("loss_norm", ["tokens", "sequences"])
@pytest.mark.parametrize("packed", [False, True])
def test_objective_tensors_live_on_the_inputs_device(name, loss_norm, packed):
    """Every tensor the objective makes follows its inputs' device, never the default one (on a GPU run
    the default is the CPU): with 'meta' as the default device, any stray factory call breaks the result."""
    kw = {"loss_norm": loss_norm, **({"self_normalize": True} if name == "iw-sft" else {})}
    seq_index = torch.tensor([[0, 1], [0, 0], [0, 0], [0, 0]]) if packed else None
    mask = MASK4.clone()
    mask[0, 1] = packed
    expected = iw_objective(POL4, POL4, REF4, mask, preset(name, **kw), seq_index=seq_index)
    with torch.device("meta"):
        got = iw_objective(POL4, POL4, REF4, mask, preset(name, **kw), seq_index=seq_index)
    for field in ("loss", "loss_sum", "normalizer", "seq_weights", "log_weights", "token_weights"):
        assert getattr(got, field).device.type == "cpu" and torch.equal(getattr(got, field), getattr(expected, field)), field
    assert got.diagnostics == expected.diagnostics


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_logprobs_one_pass_per_chunk_whatever_the_defaults(dtype, monkeypatch):
    """10 positions in chunks of 3: 4 log-sum-exps forward and 4 softmaxes backward (not one per position),
    float32 out and gradients in the logits' dtype even when the default dtype and device are changed."""
    torch.manual_seed(2)
    logits, targets = torch.randn(2, 5, 7, dtype=dtype), torch.randint(0, 7, (2, 5))
    b = logits.clone().requires_grad_()
    torch.log_softmax(b.float(), -1).gather(-1, targets[..., None]).squeeze(-1).sum().backward()
    calls = {"logsumexp": 0, "exp": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper
    for name in calls:
        monkeypatch.setattr(torch, name, counted(name, getattr(torch, name)))
    a = logits.clone().requires_grad_()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.device("meta"):
            got = token_logprobs(a, targets, chunk_size=3)
            got.sum().backward()
    finally:
        torch.set_default_dtype(default)
    assert calls == {"logsumexp": 4, "exp": 4}
    assert got.dtype == torch.float32 and got.device.type == "cpu" and a.grad.dtype == dtype
    torch.testing.assert_close(got, torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1))
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-6 if dtype == torch.float32 else 0)
