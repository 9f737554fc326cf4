"""Shared fixtures. `smollm2` loads the embedded SmolLM2-135M-Instruct once per session (the first run
on a machine converts the GGUF into the cache, about 20 s; later runs load the cache)."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest


def _vllm_importable() -> bool:
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def pytest_runtest_setup(item):
    """Tests marked `vllm` run the real engine (vLLM's CPU build). Where vllm is not importable (the main
    virtual environment) they are skipped, with the reason; in the vLLM environment `just test` sets
    IWSFT_REQUIRE_VLLM=1, and a missing vllm there is a failure, never a skip."""
    if item.get_closest_marker("vllm") is None or _vllm_importable():
        return
    why = (f"vllm is not importable in this environment ({sys.executable}); `just vllm-env` builds one with "
           "vLLM's CPU build and `just test` runs the vllm tests there")
    if os.environ.get("IWSFT_REQUIRE_VLLM") == "1":
        pytest.fail(f"IWSFT_REQUIRE_VLLM=1 but {why}", pytrace=False)
    pytest.skip(why)


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


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A folder with `model/` (a tiny random Llama, the smollm2 tokenizer) and `data.jsonl`: 12 one-digit
    additions in both row formats (s1K columns, and a sampled `response`) and a `score` column."""
    import json

    from harness.core.models import load_tokenizer
    from tiny_models import tiny_random_model

    d = tmp_path_factory.mktemp("tiny")
    tok = load_tokenizer("smollm2-135m")
    tiny_random_model(tok, hidden=32, layers=2).save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    rows = [{"question": f"What is {a} + {b}?", "deepseek_thinking_trajectory": f"{a} plus {b} is {a + b}.",
             "deepseek_attempt": f"\\boxed{{{a + b}}}", "response": f"{a} plus {b} is {a + b}. Answer: {a + b}",
             "score": a * 10 + b} for a in range(4) for b in range(3)]
    (d / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


_CLI_SHIM = """#!{python}
import json, sys
sys.path.insert(0, {root!r})
if sys.argv[1] == "-c":                                    # a version print or import probe
    sys.exit(0)
assert sys.argv[1:3] == ["-m", "harness"], sys.argv
from harness.cli import build_parser
from harness.perf.train_bench import SHAPES, VARIANTS
args = build_parser().parse_args(sys.argv[3:])
if args.command == "bench":
    assert set(args.shapes.split(",")) <= set(SHAPES) and set(args.variants.split(",")) <= set(VARIANTS), sys.argv
    [int(x) for x in args.seq_lens.split(",")]
with open({log!r}, "a") as f:
    f.write(json.dumps(sys.argv[3:]) + "\\n")
"""


@pytest.fixture
def cli_shim(tmp_path):
    """(python, calls): a stand-in `python` for the GPU scripts (their PYTHON variable) that parses each
    `-m harness ...` command with the real CLI parser, checks bench shapes and variants, and appends the
    arguments to `calls` (JSON lines) instead of running them: a typo costs no device time."""
    import stat
    from pathlib import Path

    calls, shim = tmp_path / "calls.jsonl", tmp_path / "python"
    root = Path(__file__).resolve().parents[1]
    shim.write_text(_CLI_SHIM.format(python=sys.executable, root=str(root), log=str(calls)))
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return shim, calls
