"""Shared fixtures. `smollm2` loads the embedded SmolLM2-135M-Instruct once per session (the first run
on a machine converts the GGUF into the cache, about 20 s; later runs load the cache)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from harness.core.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2(smollm2_tokenizer):
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct, float32 on CPU."""
    from harness.core.models import load_model

    return load_model("smollm2-135m", dtype="float32", device="cpu"), smollm2_tokenizer


@pytest.fixture(scope="session")
def tiny_model(smollm2_tokenizer):
    """(tiny random Llama with the smollm2 vocabulary, smollm2 tokenizer): fast stand-in for training tests."""
    from tiny_models import tiny_random_model

    return tiny_random_model(smollm2_tokenizer, hidden=64, layers=2), smollm2_tokenizer
