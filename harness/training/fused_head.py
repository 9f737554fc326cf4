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


class _FusedHeadLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, tgt, chunk_size):
        dev = hidden.device.type
        cast = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        h = hidden.to(cast) if cast is not None else hidden
        w = weight.to(cast) if cast is not None else weight
        n = h.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=h.device)
        lse = torch.empty(n, dtype=torch.float32, device=h.device)
        with torch.autocast(dev, enabled=False):
            for s in range(0, n, chunk_size):
                logits = (h[s : s + chunk_size] @ w.t()).float()
                lse[s : s + chunk_size] = torch.logsumexp(logits, dim=-1)
                out[s : s + chunk_size] = logits.gather(-1, tgt[s : s + chunk_size, None]).squeeze(-1) - lse[s : s + chunk_size]
        ctx.save_for_backward(h, w, tgt, lse)
        ctx.chunk_size, ctx.hidden_dtype, ctx.weight_dtype = chunk_size, hidden.dtype, weight.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        h, w, tgt, lse = ctx.saved_tensors
        cs = ctx.chunk_size
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        with torch.autocast(h.device.type, enabled=False):
            for s in range(0, h.shape[0], cs):
                hc = h[s : s + cs]
                g_out = grad_out[s : s + cs, None].float()
                # d/dlogits [logit_y - lse] = onehot(y) - softmax, as in _ChunkedTokenLogprobs
                g = torch.exp((hc @ w.t()).float() - lse[s : s + cs, None]).mul_(-g_out)
                g.scatter_add_(-1, tgt[s : s + cs, None], g_out)
                g = g.to(w.dtype)
                grad_h[s : s + cs] = g @ w
                grad_w += (g.t() @ hc).float()
        return grad_h.to(ctx.hidden_dtype), grad_w.to(ctx.weight_dtype), None, None


def fused_token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk_size: int = 2048) -> torch.Tensor:
    """log softmax(hidden @ weight^T)[target] in float32; hidden [..., H], weight [V, H], targets [...]
    (negative targets are treated as 0 and must be masked by the caller)."""
    lead = hidden.shape[:-1]
    flat = hidden.reshape(-1, hidden.shape[-1])
    tgt = targets.reshape(-1).clamp_min(0)
    if flat.shape[0] == 0:
        return flat.new_zeros(lead, dtype=torch.float32)
    return _FusedHeadLogprobs.apply(flat, weight, tgt, chunk_size).reshape(lead)


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
