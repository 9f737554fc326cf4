"""Generation: backends (HF transformers, vLLM) behind one interface, prompts, budget forcing."""

from __future__ import annotations

import importlib.util
from typing import Any

from harness.core.errors import UserError
from harness.evaluation.generation.base import Backend, Completion, GenParams

__all__ = ["Backend", "Completion", "GenParams", "make_backend", "resolve_backend_kind", "vllm_available"]

BACKEND_KINDS = ("auto", "hf", "vllm")


def vllm_available() -> bool:
    """vllm is installed (checked without importing it: importing is slow and touches CUDA)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError, AttributeError):
        return False


def resolve_backend_kind(kind: str = "auto") -> str:
    """"auto" -> "vllm" when a CUDA GPU is visible and vllm is installed, else "hf"."""
    if kind not in BACKEND_KINDS:
        raise UserError(f"unknown backend '{kind}'; choose one of {', '.join(BACKEND_KINDS)}")
    if kind != "auto":
        return kind
    try:
        import torch

        cuda = torch.cuda.is_available()
    except Exception:
        cuda = False
    return "vllm" if cuda and vllm_available() else "hf"


def make_backend(kind: str, model_name: str, *, dtype: str | None = None, device: str | None = None,
                 batch_size: int = 16, tensor_parallel_size: int = 1, tokenizer: Any = None,
                 **opts: Any) -> Backend:
    """Build a backend for `model_name` (alias, local folder or hub id; see harness.core.models).

    hf: loads the model (dtype default float32) on `device` (default: cuda if available, else cpu);
        `tokenizer` reuses an already-loaded tokenizer; tensor_parallel_size must be 1.
    vllm: `vllm.LLM` on the resolved path (the alias's cached HF folder), dtype default "auto",
        tensor_parallel_size passed through, prefix caching on; extra `opts` go to vllm.LLM.
    """
    from harness.core.models import load_model, load_tokenizer, resolve_model

    kind = resolve_backend_kind(kind)
    resolved = resolve_model(model_name)
    if kind == "hf":
        if int(tensor_parallel_size) != 1:
            raise UserError("the HF backend runs on one device; tensor_parallel_size > 1 needs --backend vllm")
        import torch

        from harness.evaluation.generation.hf import HFBackend

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = load_model(resolved, dtype=dtype or "float32", device=device)
        tok = tokenizer if tokenizer is not None else load_tokenizer(resolved)
        return HFBackend(model, tok, batch_size=batch_size)
    from harness.evaluation.generation.vllm_backend import VLLMBackend

    return VLLMBackend(resolved.path, dtype=dtype or "auto", tensor_parallel_size=tensor_parallel_size,
                       tokenizer=tokenizer, **opts)
