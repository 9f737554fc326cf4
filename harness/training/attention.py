"""Attention kernels: the recipe key `attention` and `iwsft bench --attention`, one definition for both.

- sdpa   torch's scaled_dot_product_attention, torch picks the kernel (flash on Hopper); the model loads
         as it always did (transformers' default, SDPA for Llama / Qwen2)
- cudnn  SDPA restricted to cuDNN's kernel (`torch.nn.attention.sdpa_kernel`) around every forward and
         backward, so a shape cuDNN cannot take fails instead of falling back silently; CUDA only
- flex   transformers' flex_attention (torch's FlexAttention): block masks, so packed rows attend within
         their document without a [T x T] mask; CUDA only for training (no backward on CPU)
"""

from __future__ import annotations

import contextlib

from harness.core.errors import UserError

ATTENTION = ("sdpa", "cudnn", "flex")
# what `from_pretrained(attn_implementation=...)` is given (None: transformers' default, as before the key)
HF_IMPLEMENTATION = {"sdpa": None, "cudnn": "sdpa", "flex": "flex_attention"}
# why a kernel cannot train without CUDA. flex: torch 2.13 refuses FlexAttention on CPU inputs that require grad
# ("FlexAttention does not support backward on CPU"); its no-grad forward runs there (tests/test_attention_option.py)
CUDA_ONLY = {"cudnn": "cuDNN is CUDA-only", "flex": "torch's FlexAttention has no backward on CPU"}


def check_name(attention: str, key: str = "attention") -> None:
    """UserError for a name that is not one of ATTENTION; `key` is how the user spelled the option."""
    if attention not in ATTENTION:
        raise UserError(f"{key} {attention!r} is not one of {', '.join(ATTENTION)}")


def check_device(attention: str, device, key: str = "attention") -> None:
    """UserError for a kernel `device` cannot run (cudnn without CUDA), naming why and the fallback."""
    import torch

    check_name(attention, key)
    why = CUDA_ONLY.get(attention)
    if why and torch.device(device).type != "cuda":
        sep = " " if key.startswith("--") else "="
        raise UserError(f"{key}{sep}{attention} needs a CUDA GPU ({why}); use {key}{sep}sdpa here")


def attention_context(attention: str):
    """The kernel restriction a forward and its backward run under (cudnn: SDPA's cuDNN backend only, so a
    missing kernel fails); a no-op for sdpa and flex."""
    if attention == "cudnn":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.CUDNN_ATTENTION])
    return contextlib.nullcontext()
