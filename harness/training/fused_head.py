"""Next-token log-probs straight from the last hidden states: the LM head fused with the log-softmax.

The plain path (`token_logprobs` on the model's logits) keeps the [tokens x vocab] logits alive from
forward to backward and makes a gradient of the same size (2 x 2 bytes per token and vocabulary
entry in bf16: 20 GB at 32k tokens x 152k). Here the model runs with its output projection
switched to the identity, so it returns hidden states, and this function computes, chunk by chunk
over tokens, logits = h W^T -> float32 log-softmax -> the target's log-prob, keeping only the hidden
states and one float32 log-sum-exp per token; backward recomputes each chunk's logits. Extra cost:
one more head matmul (2 x tokens x hidden x vocab FLOPs, about 5% of a 1.5B step).

Same numbers as the plain path: the same matmul in the same dtype (the autocast dtype when autocast
is on), the same float32 log-softmax; in float32 (CPU tests) they agree to rounding.

Runs in one process, under DDP and under FSDP2 (whose root parameters, the head among them, stay
unsharded from the forward to the backward; tested on CPU processes). The trainer refuses it under
FSDP1, which may re-shard them in between.
"""

from __future__ import annotations

import contextlib

import torch
from accelerate.utils import extract_model_from_parallel   # DDP / FSDP wrappers -> the model

FUSED_MODEL_TYPES = {"llama", "qwen2", "qwen3", "mistral"}   # logits = lm_head(h), nothing after it


def _forward_chunk(hc, w, tc):
    """One chunk's forward: (log-prob of each target, float32 log-sum-exp of each row's logits)."""
    logits = (hc @ w.t()).float()
    lse = torch.logsumexp(logits, dim=-1)
    return logits.gather(-1, tc[:, None]).squeeze(-1) - lse, lse


def _backward_chunk(hc, w, tc, lse_c, g_out):
    """One chunk's backward: (grad of hc in w's dtype, the chunk's float32 contribution to grad of w).
    d/dlogits [logit_y - lse] = onehot(y) - softmax, as in _ChunkedTokenLogprobs; the softmax is
    recomputed from the saved log-sum-exp."""
    g_out = g_out[:, None].float()
    g = torch.exp((hc @ w.t()).float() - lse_c[:, None]).mul_(-g_out)
    g.scatter_add_(-1, tc[:, None], g_out)
    g = g.to(w.dtype)
    return g @ w, (g.t() @ hc).float()


# Compiled (fused_head_compile): the full chunks and the last, shorter one are separate compiled functions
# (separate code objects, so separate dynamo caches). Full chunks: dynamic=False, one static graph for every
# full chunk of every batch. The tail's length changes from batch to batch (tokens mod chunk_size): static
# shapes would recompile for each new length and, past dynamo's recompile limit (8), fall back to eager; padding
# it to a full chunk would spend up to one chunk's head matmuls on zeros. So the tail is compiled once with
# dynamic shapes (dynamic=True): one more graph (and one more for a tail of exactly 1 token, which dynamo
# specialises), no padded compute. Its inputs are copied (`_tail`, at most chunk_size rows) so that they start
# at storage offset 0: dynamo also specialises offsets 0 and 1, and a tail that is the whole input (fewer
# tokens than chunk_size) would otherwise compile again.
def _forward_tail(hc, w, tc):
    return _forward_chunk(hc, w, tc)


def _backward_tail(hc, w, tc, lse_c, g_out):
    return _backward_chunk(hc, w, tc, lse_c, g_out)


_compiled: dict[str, object] = {}


def _tail(*ts):
    return tuple(t.clone() for t in ts)


def _chunk_fns(compiled: bool, full: bool):
    """(forward, backward) for one chunk: the plain functions (eager), or their compiled wrappers (built once)."""
    if not compiled:
        return _forward_chunk, _backward_chunk
    key = "full" if full else "tail"
    if key not in _compiled:
        fwd, bwd = (_forward_chunk, _backward_chunk) if full else (_forward_tail, _backward_tail)
        _compiled[key] = (torch.compile(fwd, dynamic=not full), torch.compile(bwd, dynamic=not full))
    return _compiled[key]


class _FusedHeadLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, tgt, chunk_size, compiled):
        dev = hidden.device.type
        cast = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        h = hidden.to(cast) if cast is not None else hidden
        w = weight.to(cast) if cast is not None else weight
        n = h.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=h.device)
        lse = torch.empty(n, dtype=torch.float32, device=h.device)
        # detached for the chunks: compiled, they then see the same inputs (no requires_grad) whether the policy
        # or the no-grad reference pass calls them, so both run one graph and agree bitwise
        hd, wd = h.detach(), w.detach()
        with torch.autocast(dev, enabled=False):
            for s in range(0, n, chunk_size):
                e = min(s + chunk_size, n)
                full = e - s == chunk_size
                fwd, _ = _chunk_fns(compiled, full)
                hc, tc = (hd[s:e], tgt[s:e]) if full or not compiled else _tail(hd[s:e], tgt[s:e])
                out[s:e], lse[s:e] = fwd(hc, wd, tc)
        ctx.save_for_backward(h, w, tgt, lse)
        ctx.chunk_size, ctx.compiled = chunk_size, compiled
        ctx.hidden_dtype, ctx.weight_dtype = hidden.dtype, weight.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        h, w, tgt, lse = ctx.saved_tensors
        cs, n = ctx.chunk_size, h.shape[0]
        grad_out = grad_out.contiguous()   # e.g. sum()'s expanded ones: one stride pattern for the compiled graphs
        hd, wd = h.detach(), w.detach()    # a saved input comes back requiring grad: one graph whatever came in
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        with torch.autocast(h.device.type, enabled=False):
            for s in range(0, n, cs):
                e = min(s + cs, n)
                full = e - s == cs
                _, bwd = _chunk_fns(ctx.compiled, full)
                args = (hd[s:e], tgt[s:e], lse[s:e], grad_out[s:e])
                hc, tc, lc, gc = args if full or not ctx.compiled else _tail(*args)
                grad_h[s:e], gw = bwd(hc, wd, tc, lc, gc)
                grad_w += gw
        return grad_h.to(ctx.hidden_dtype), grad_w.to(ctx.weight_dtype), None, None, None


def fused_token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk_size: int = 2048, compiled: bool = False) -> torch.Tensor:
    """log softmax(hidden @ weight^T)[target] in float32; hidden [..., H], weight [V, H], targets [...]
    (negative targets are treated as 0 and must be masked by the caller). compiled: each chunk's forward
    and backward math through torch.compile (recipe key fused_head_compile; the same numbers to rounding)."""
    lead = hidden.shape[:-1]
    flat = hidden.reshape(-1, hidden.shape[-1])
    tgt = targets.reshape(-1).clamp_min(0)
    if flat.shape[0] == 0:
        return flat.new_zeros(lead, dtype=torch.float32)
    return _FusedHeadLogprobs.apply(flat, weight, tgt, chunk_size, compiled).reshape(lead)


def fused_supported(model) -> str | None:
    """None when the fused head applies to this model, else the reason it does not."""
    inner = extract_model_from_parallel(model)
    mtype = getattr(getattr(inner, "config", None), "model_type", None)
    if mtype not in FUSED_MODEL_TYPES:
        return f"model type {mtype!r} (fused_lm_head supports {', '.join(sorted(FUSED_MODEL_TYPES))})"
    head = inner.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return "its output layer is not a bias-free Linear"
    return None


@contextlib.contextmanager
def head_passthrough(model):
    """Within the block the model's forward returns its last hidden states in place of logits.
    Yields the output layer: read its `.weight` AFTER the forward (under FSDP2 that is when the
    root's parameters are unsharded, and the tensor gradients must reach)."""
    head = extract_model_from_parallel(model).get_output_embeddings()
    head.forward = _identity
    try:
        yield head
    finally:
        del head.forward


def _identity(x):
    return x
