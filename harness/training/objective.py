"""The iw-SFT objective: a pure function of per-token log-probs and masks.

Notation (docs/method.md#the-method). For a curated sequence tau with response tokens y_1..y_T:

    rho_t  = log pi_q(y_t | prefix) - log pi_ref(y_t | prefix)
    w(tau) = exp( sum_t g(rho_t) )                 constant: no gradient flows through w
    loss   = sum_tau w(tau) * sum_t -log pi_theta(y_t | prefix) / (response tokens)

The function below receives the three log-prob tensors already computed (where q comes from is the
caller's business, see `harness.training.qsource`), so it can be tested without a model.

Batching. Inputs are [B, T] tensors with a boolean `mask` of response tokens (prompt and padding
are False). A row may hold several packed sequences: pass `seq_index` [B, T] (an int per token,
the same value for tokens of one sequence within a row); weights are then per packed sequence.
All reductions go through one scatter over sequence ids, so padding and packing never change a
weight: at theta = q = ref every rho_t is exactly 0 and every weight is exactly 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import math

import torch

from harness.core.errors import UserError

Level = Literal["none", "sequence", "token"]


@dataclass(frozen=True)
class WeightSpec:
    """How importance weights are formed. Use `preset(name, **overrides)` rather than building one.

    level            "none" (w = 1), "sequence" (one weight per sequence) or "token" (per-step).
    reduce           sequence level: "mean" (sum_t g / T, length-normalised) or "sum".
    g                "linear": g(rho) = k * rho.
                     "clip": g(rho) = k * clip(rho, log lo, log hi), i.e. the per-step RATIO
                     q/pi_ref is clipped to [lo, hi] (paper: (1-0.8, 1+0.8)) before its log is
                     summed. The paper writes "0.1 * clip(x, 0.2, 1.8)" without saying whether x
                     is the ratio or its log; reading x as the raw ratio (or as rho clipped to
                     [0.2, 1.8]) gives w != 1 when theta = ref, so we clip the ratio, which is the
                     reading consistent with the paper's "per step clipping of the ratio".
    k                the scale of g (paper LLM text: 0.1; released code: 1).
    g_clip           (lo, hi) ratio bounds for g = "clip".
    w_clip           optional overall clip of w (released code: (0, 16); paper: (beta_min, beta_max)).
    self_normalize   divide w by its mean over the sequences of the whole optimizer step (all
                     micro-batches and processes: the trainer passes that mean, `step_log_mean`;
                     a direct call normalises over the batch it is given). Mean, not sum, so that
                     w = 1 at step 0. Sequence level only.
    token_clip       level "token": per-token weight clamp(exp(rho_t), lo, hi).
    loss_norm        "tokens": sum over tokens of w * nll / response tokens (released code).
                     "sequences": mean over sequences of w * mean nll. Which tokens or sequences the
                     sum is divided by (one micro-batch, or the whole accumulation window as
                     transformers >= 4.46 does) is the recipe's `loss_normalization`: the trainer
                     divides `loss_sum` by its own normaliser when it is the window.
    """

    name: str
    level: Level
    reduce: Literal["mean", "sum"] = "mean"
    g: Literal["linear", "clip"] = "linear"
    k: float = 1.0
    g_clip: tuple[float, float] = (0.2, 1.8)
    w_clip: tuple[float, float] | None = None
    self_normalize: bool = False
    token_clip: tuple[float, float] = (0.2, 1.8)
    loss_norm: Literal["tokens", "sequences"] = "tokens"

    def __post_init__(self):
        if self.level not in ("none", "sequence", "token"):
            raise UserError(f"weighting level {self.level!r} is not one of none, sequence, token")
        if self.reduce not in ("mean", "sum"):
            raise UserError(f"weighting reduce {self.reduce!r} is not one of mean, sum")
        if self.g not in ("linear", "clip"):
            raise UserError(f"weighting g {self.g!r} is not one of linear, clip")
        if self.loss_norm not in ("tokens", "sequences"):
            raise UserError(f"loss_norm {self.loss_norm!r} is not one of tokens, sequences")
        lo, hi = self.g_clip
        if not 0 < lo <= 1 <= hi:
            raise UserError(f"g_clip {self.g_clip} must satisfy 0 < lo <= 1 <= hi so that w = 1 at step 0")
        lo, hi = self.token_clip
        if not 0 <= lo <= 1 <= hi:
            raise UserError(f"token_clip {self.token_clip} must satisfy 0 <= lo <= 1 <= hi so that w = 1 at step 0")
        if self.w_clip is not None and not 0 <= self.w_clip[0] <= 1 <= self.w_clip[1]:
            raise UserError(f"w_clip {self.w_clip} must satisfy 0 <= lo <= 1 <= hi so that w = 1 at step 0")
        if self.self_normalize and self.level != "sequence":
            raise UserError(f"self_normalize applies to sequence weights; weighting level {self.level!r} would ignore it: "
                            "drop self_normalize from weighting_overrides")


def _sft() -> WeightSpec:
    """`sft`: w = 1 for every sequence. Plain SFT on curated data (paper eq. 3; s1)."""
    return WeightSpec(name="sft", level="none")


def _iw_sft() -> WeightSpec:
    """`iw-sft`: the authors' released code (emmyqin/iw_sft), the run behind Table 1.
    w = clamp(exp(mean_t (log pi_q - log pi_ref)), 0, 16) with q = current policy, gradient stopped;
    length-normalised, no 0.1 factor, no per-step clip, no batch normalisation."""
    return WeightSpec(name="iw-sft", level="sequence", reduce="mean", g="linear", k=1.0, w_clip=(0.0, 16.0))


def _iw_sft_paper() -> WeightSpec:
    """`iw-sft-paper`: the paper's text (§4, Algorithm 1): w = exp(sum_t g(rho_t)) with
    g(rho) = 0.1 * clip(rho, log 0.2, log 1.8) (ratio clipped to (1-0.8, 1+0.8)), summed over tokens.
    The paper's overall clip (beta_min, beta_max) has no published values: set `w_clip` to use one.
    Control-suite variant: g = "linear", k = 10, reduce = "mean", w_clip = (0, 1000),
    self_normalize = True."""
    return WeightSpec(name="iw-sft-paper", level="sequence", reduce="sum", g="clip", k=0.1, g_clip=(0.2, 1.8))


def _per_step() -> WeightSpec:
    """`per-step`: Table 1's "iw-SFT (per-step iw)" row, the released code's per-token branch:
    each token's NLL is multiplied by clamp(exp(rho_t), 0.2, 1.8)."""
    return WeightSpec(name="per-step", level="token", token_clip=(0.2, 1.8))


PRESETS = {"sft": _sft, "iw-sft": _iw_sft, "iw-sft-paper": _iw_sft_paper, "per-step": _per_step}
# One line each, for reports (the docstrings above have the details).
ORIGINS = {"sft": "plain SFT, w = 1", "iw-sft": "the released code: w = clamp(exp(mean log-ratio), 0, 16)",
           "iw-sft-paper": "the paper's text: w = exp(sum of 0.1 x clipped log-ratios)",
           "per-step": "the released code's per-token branch: clamp(ratio_t, 0.2, 1.8)"}


def preset(name: str, **overrides) -> WeightSpec:
    """A named weighting preset, optionally with fields overridden (e.g. w_clip=(0, 8))."""
    if name not in PRESETS:
        raise UserError(f"unknown weighting {name!r}; choose one of {', '.join(PRESETS)}")
    spec = PRESETS[name]()
    if overrides:
        unknown = set(overrides) - set(WeightSpec.__dataclass_fields__)
        if unknown:
            raise UserError(f"unknown weighting option(s) {sorted(unknown)}; valid: {sorted(WeightSpec.__dataclass_fields__)}")
        spec = replace(spec, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    return spec


class NonFiniteError(UserError):
    """Non-finite log-probs or weights: never let them become a silent NaN loss."""


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor              # scalar, differentiable w.r.t. the policy log-probs
    loss_sum: torch.Tensor          # numerator, for normalising across gradient-accumulation steps
    normalizer: torch.Tensor        # denominator (tokens or sequences, per loss_norm)
    seq_weights: torch.Tensor       # [S] one weight per sequence (1 for sft; for "token": mean token weight)
    log_weights: torch.Tensor       # [S] log w per sequence before any clip (token level: mean log token weight)
    token_weights: torch.Tensor     # [B, T] weight applied to each token's NLL (0 off the mask)
    diagnostics: dict[str, float] = field(default_factory=dict)


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """log softmax(logits)[target] with a float32 log-softmax computed chunk by chunk, forward AND
    backward: autograd keeps only the logits (in their own dtype) and one float32 log-sum-exp per
    position, never a [tokens x vocab] float32 copy (which is 2x the bf16 logits at 150k vocab)."""

    @staticmethod
    def forward(ctx, flat, tgt, chunk_size):
        n = flat.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=flat.device)
        lse = torch.empty(n, dtype=torch.float32, device=flat.device)
        for s in range(0, n, chunk_size):
            piece = flat[s : s + chunk_size].float()
            lse[s : s + chunk_size] = torch.logsumexp(piece, dim=-1)
            out[s : s + chunk_size] = piece.gather(-1, tgt[s : s + chunk_size, None]).squeeze(-1) - lse[s : s + chunk_size]
        ctx.save_for_backward(flat, tgt, lse)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out):
        flat, tgt, lse = ctx.saved_tensors
        grad = torch.empty_like(flat)
        cs = ctx.chunk_size
        for s in range(0, flat.shape[0], cs):
            g_out = grad_out[s : s + cs, None].float()
            # d/dlogits [logit_y - lse] = onehot(y) - softmax
            g = torch.exp(flat[s : s + cs].float() - lse[s : s + cs, None]).mul_(-g_out)
            g.scatter_add_(-1, tgt[s : s + cs, None], g_out)
            grad[s : s + cs] = g.to(flat.dtype)
        return grad, None, None


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """log softmax(logits)[target] in float32, chunked over positions so a [tokens x vocab] float32
    tensor is never materialised whole (see _ChunkedTokenLogprobs). logits[..., t, :] scores
    targets[..., t] (caller shifts; negative targets are treated as 0 and must be masked by the
    caller). Policy, q and reference must all go through this one function (docs/method.md#numerics)."""
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    tgt = targets.reshape(-1).clamp_min(0)
    if flat.shape[0] == 0:
        return flat.new_zeros(lead, dtype=torch.float32)
    return _ChunkedTokenLogprobs.apply(flat, tgt, chunk_size).reshape(lead)


def _sequence_ids(mask: torch.Tensor, seq_index: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """Dense sequence id per token ([B, T], -1 off the mask) and the number of sequences.
    Unpacked: one sequence per row (rows with no response tokens still count, weight 1)."""
    B, T = mask.shape
    if seq_index is None:
        ids = torch.arange(B, device=mask.device)[:, None].expand(B, T)
        return torch.where(mask, ids, torch.full_like(ids, -1)), B
    if seq_index.shape != mask.shape:
        raise UserError(f"seq_index shape {tuple(seq_index.shape)} differs from mask shape {tuple(mask.shape)}")
    # Make (row, seq_index) pairs unique across rows, then compact to 0..S-1.
    key = torch.arange(B, device=mask.device)[:, None] * (int(seq_index.max().item()) + 2) + (seq_index + 1)
    key = torch.where(mask, key, torch.full_like(key, -1))
    uniq, inverse = torch.unique(key[mask], return_inverse=True)
    ids = torch.full_like(key, -1)
    ids[mask] = inverse
    return ids, int(uniq.numel())


def _check_finite(name: str, x: torch.Tensor, mask: torch.Tensor, batch_id) -> None:
    bad = ~torch.isfinite(x) & mask
    if bool(bad.any()):
        rows = sorted({int(r) for r in bad.nonzero()[:, 0].tolist()})
        raise NonFiniteError(
            f"non-finite {name} log-probs in batch {batch_id} (rows {rows[:8]}): check the model "
            "dtype (use float32 log-softmax) and the data for empty or corrupted sequences"
        )


def loss_normalizer(mask: torch.Tensor, spec: WeightSpec, seq_index: torch.Tensor | None = None) -> int:
    """What `loss_sum` is divided by for this batch: its response tokens ("tokens") or its sequences
    with at least one response token ("sequences"). Known before any forward pass, so a trainer can
    sum it over an accumulation window first."""
    mask = mask.bool()
    if spec.loss_norm == "tokens":
        return int(mask.sum())
    ids, _ = _sequence_ids(mask, seq_index)
    return int(torch.unique(ids[mask]).numel())


def sequence_log_weights(q_logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, spec: WeightSpec,
                         seq_index: torch.Tensor | None = None) -> torch.Tensor:
    """[S] log w per sequence after g, the reduction and the overall clip, before any
    self-normalisation: what a step-wide normaliser is computed from (level "sequence" only)."""
    mask = mask.bool()
    seq_ids, S = _sequence_ids(mask, seq_index)
    flat_ids = seq_ids[mask]
    rho = (q_logprobs.detach().float() - ref_logprobs.detach().float())[mask]
    log_w = _reduce_log(rho, flat_ids, S, spec)
    if spec.w_clip is not None:
        log_w = _clip_log(log_w, spec.w_clip)
    return log_w


def _reduce_log(rho: torch.Tensor, flat_ids: torch.Tensor, S: int, spec: WeightSpec) -> torch.Tensor:
    if spec.g == "clip":
        lo, hi = spec.g_clip
        grho = spec.k * rho.clamp(math.log(lo), math.log(hi))
    else:
        grho = spec.k * rho
    log_w = torch.zeros(S, device=rho.device).index_add_(0, flat_ids, grho)
    if spec.reduce == "mean":
        counts = torch.zeros(S, device=rho.device).index_add_(0, flat_ids, torch.ones_like(rho))
        log_w = log_w / counts.clamp_min(1)
    return log_w


def _clip_log(log_w: torch.Tensor, w_clip: tuple[float, float]) -> torch.Tensor:
    lo, hi = w_clip
    return log_w.clamp(max=math.log(hi)) if lo == 0 else log_w.clamp(math.log(lo), math.log(hi))


def iw_objective(
    policy_logprobs: torch.Tensor,
    q_logprobs: torch.Tensor | None,
    ref_logprobs: torch.Tensor | None,
    mask: torch.Tensor,
    spec: WeightSpec,
    seq_index: torch.Tensor | None = None,
    batch_id: object = "?",
    step_log_mean: float | torch.Tensor | None = None,
) -> ObjectiveOutput:
    """Loss, weights and diagnostics for one (micro-)batch. All log-prob tensors are [B, T] and
    aligned with `mask` (True on response tokens). q and ref may be None for level "none".
    `step_log_mean`: with self_normalize, log of the mean (clipped) weight over the whole optimizer
    step (see `sequence_log_weights`); None normalises over this batch alone."""
    mask = mask.bool()
    pol = policy_logprobs.float()
    _check_finite("policy", pol.detach(), mask, batch_id)
    seq_ids, S = _sequence_ids(mask, seq_index)
    flat_ids = seq_ids[mask]
    nll = -pol[mask]                                            # [N] response tokens only
    dev = pol.device

    if spec.level == "none":
        log_w = torch.zeros(S, device=dev)
        tok_w = torch.ones_like(nll)
        seq_w = torch.ones(S, device=dev)
        clip_frac, n_clip, clip_units = 0.0, 0, 0
    else:
        if q_logprobs is None or ref_logprobs is None:
            raise UserError(f"weighting {spec.name!r} needs q and reference log-probs")
        q = q_logprobs.detach().float()
        ref = ref_logprobs.detach().float()
        _check_finite("q", q, mask, batch_id)
        _check_finite("reference", ref, mask, batch_id)
        rho = (q - ref)[mask]                                   # [N]
        counts = torch.zeros(S, device=dev).index_add_(0, flat_ids, torch.ones_like(rho))
        if spec.level == "token":
            lo, hi = spec.token_clip
            raw = torch.exp(rho)
            tok_w = raw.clamp(lo, hi)
            clip_frac = float(((raw < lo) | (raw > hi)).float().mean()) if rho.numel() else 0.0
            log_w = torch.zeros(S, device=dev).index_add_(0, flat_ids, rho) / counts.clamp_min(1)
            seq_w = torch.zeros(S, device=dev).index_add_(0, flat_ids, tok_w) / counts.clamp_min(1)
            seq_w = torch.where(counts > 0, seq_w, torch.ones_like(seq_w))
            n_clip, clip_units = int(((raw < lo) | (raw > hi)).sum()), int(rho.numel())
        else:
            log_w = _reduce_log(rho, flat_ids, S, spec)
            seq_w, clip_frac = _weights_from_log(log_w, spec, batch_id, step_log_mean)
            n_clip, clip_units = round(clip_frac * S), S
            tok_w = seq_w[flat_ids]

    if spec.loss_norm == "tokens":
        loss_sum = (tok_w * nll).sum()
    else:
        counts = torch.zeros(S, device=dev).index_add_(0, flat_ids, torch.ones_like(nll))
        per_seq = torch.zeros(S, device=dev).index_add_(0, flat_ids, tok_w * nll) / counts.clamp_min(1)
        loss_sum = per_seq[counts > 0].sum()
    normalizer = torch.tensor(float(loss_normalizer(mask, spec, seq_index)), device=dev)
    loss = loss_sum / normalizer.clamp_min(1)

    token_weights = torch.zeros_like(pol)
    token_weights[mask] = tok_w
    return ObjectiveOutput(
        loss=loss,
        loss_sum=loss_sum,
        normalizer=normalizer,
        seq_weights=seq_w.detach(),
        log_weights=log_w.detach(),
        token_weights=token_weights.detach(),
        diagnostics={**weight_diagnostics(seq_w.detach(), log_w.detach(), clip_frac),
                     "clip_count": n_clip, "clip_units": clip_units},
    )


def _weights_from_log(log_w: torch.Tensor, spec: WeightSpec, batch_id, step_log_mean=None) -> tuple[torch.Tensor, float]:
    """exp, overall clip, optional self-normalisation; computed in log space so long sums of g
    saturate at the clip instead of overflowing."""
    clip_frac = 0.0
    if spec.w_clip is not None:
        lo, hi = spec.w_clip
        log_lo = math.log(lo) if lo > 0 else -math.inf
        at_clip = (log_w <= log_lo) | (log_w >= math.log(hi))
        clip_frac = float(at_clip.float().mean()) if log_w.numel() else 0.0
        log_w = _clip_log(log_w, spec.w_clip)
    if spec.self_normalize and log_w.numel():
        # w_i / mean(w) = exp(log_w_i - log mean(w)), mean over the step (or this batch): finite for any log_w.
        if step_log_mean is None:
            step_log_mean = torch.logsumexp(log_w, 0) - math.log(log_w.numel())
        w = torch.exp(log_w - step_log_mean)
    else:
        w = torch.exp(log_w)
    if not bool(torch.isfinite(w).all()):
        raise NonFiniteError(
            f"importance weights overflowed in batch {batch_id} (max log w = {float(log_w.max()):.1f}): "
            "set w_clip or self_normalize in the recipe's weighting"
        )
    return w, clip_frac


def weight_diagnostics(w: torch.Tensor, log_w: torch.Tensor, clip_frac: float = 0.0) -> dict[str, float]:
    """Mean and max weight, quantiles of log w, effective sample size (sum w)^2 / sum w^2 (as a
    count and as a fraction of the batch), fraction of weights at the clip."""
    if w.numel() == 0:
        return {}
    w = w.double()
    q = torch.quantile(log_w.double(), torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64, device=log_w.device))
    ess = float(w.sum() ** 2 / (w.pow(2).sum()).clamp_min(1e-300))
    return {
        "w_mean": float(w.mean()),
        "w_max": float(w.max()),
        "w_min": float(w.min()),
        "logw_p05": float(q[0]),
        "logw_p50": float(q[1]),
        "logw_p95": float(q[2]),
        "ess": ess,
        "ess_frac": ess / w.numel(),
        "clip_frac": clip_frac,
    }
