"""One meaning of `--dtype` on every backend: "auto" resolves to an explicit dtype per device, before
any backend loads, and the resolved name is what a run's settings record.

Left to themselves the backends disagree: vLLM's "auto" takes the checkpoint's dtype but downcasts a
float32 checkpoint to bfloat16 (on CUDA and on its CPU build alike: "Downcasting torch.float32 to
torch.bfloat16"), while our HF backend loads float32. So:
- CPU: float32 (exact, what the HF backend always did; vLLM's CPU build runs float32 too);
- CUDA: the checkpoint's dtype when it is a 16-bit one (float16 stays float16), else bfloat16:
  what vLLM's "auto" picks there, now also on the HF backend.
s1 itself passed dtype=float32 to vLLM (evals/paper.yaml says so explicitly).
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.core.errors import UserError

CANONICAL = {"float32": "float32", "fp32": "float32", "float": "float32",
             "bfloat16": "bfloat16", "bf16": "bfloat16",
             "float16": "float16", "fp16": "float16", "half": "float16"}


def canonical(dtype: str) -> str:
    """'bf16' -> 'bfloat16', 'torch.float32' -> 'float32'; 'auto' stays; anything else is a UserError."""
    d = str(dtype).strip().lower().removeprefix("torch.")
    if d == "auto":
        return d
    try:
        return CANONICAL[d]
    except KeyError:
        raise UserError(f"unknown dtype '{dtype}'; use one of float32, bfloat16, float16, auto") from None


def compute_device() -> str:
    """Where both backends run: "cuda" when torch sees a GPU, else "cpu"."""
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:
        return "cpu"


def checkpoint_dtype(model_path: str, revision: str | None = None) -> str | None:
    """The dtype a checkpoint's config.json declares (`dtype`, or transformers 4's `torch_dtype`), read
    from a local folder or the hub cache; None when unknown (nothing is downloaded here)."""
    config = Path(model_path) / "config.json"
    if not config.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model_path, "config.json", revision=revision)
        except Exception:
            found = None
        if not isinstance(found, str):
            return None
        config = Path(found)
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    declared = data.get("dtype") or data.get("torch_dtype")
    return CANONICAL.get(str(declared).lower()) if declared else None


def resolve_dtype(dtype: str, model_path: str, device: str, revision: str | None = None) -> str:
    """The explicit dtype both backends load for `dtype` (see the module docstring)."""
    d = canonical(dtype)
    if d != "auto":
        return d
    if device == "cpu":
        return "float32"
    declared = checkpoint_dtype(model_path, revision)
    return declared if declared in ("bfloat16", "float16") else "bfloat16"
