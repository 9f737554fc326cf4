"""The engine: one model loaded once (tokenizer + generation backend), shared by every benchmark,
setting and thinking budget evaluated on it.

`run_eval(cfg)` makes one for its config; a job that evaluates one model under several configs
(the paper jobs, curate) makes one with `Engine.for_config(cfg)`, passes it to each
`run_eval(cfg, engine=...)`, and calls `close()` to release its memory before the next model loads.
What a run asks of the engine per config (prompt, budget, sampling) comes with each call.
"""

from __future__ import annotations

from typing import Any, Callable

from harness.core.errors import UserError
from harness.evaluation.benchmarks import Problem


# Load-time settings an EvalConfig carries to its engine (None = the backend's default). Which backend
# takes which is its class's `options`; harness.evaluation.config.validate refuses the others.
ENGINE_OPTIONS = ("revision", "tokenizer", "max_model_len", "gpu_memory_utilization", "enforce_eager",
                  "enable_prefix_caching")


class Engine:
    def __init__(self, model: str, *, backend: str = "auto", dtype: str = "auto", tensor_parallel_size: int = 1,
                 batch_size: int | None = None, progress: bool = True, adapter: str | None = None, **options):
        unknown = set(options) - set(ENGINE_OPTIONS)
        if unknown:
            raise TypeError(f"unknown engine option(s) {sorted(unknown)}")
        self.model = model
        self.progress = progress
        self.backend_name = backend
        self.dtype = dtype
        self.tensor_parallel_size = tensor_parallel_size
        self.batch_size = batch_size
        self.options = {k: options.get(k) for k in ENGINE_OPTIONS}
        self.adapter = adapter             # a LoRA adapter on the model (generation/adapter.py)
        self._adapter = None
        self._resolved = None
        self._tokenizer = None
        self._backend = None
        self._dtype_resolved = None
        self._weights_id: str | None | bool = False    # False: not computed yet

    @classmethod
    def for_config(cls, cfg) -> "Engine":
        return cls(cfg.model, backend=cfg.backend, dtype=cfg.dtype, tensor_parallel_size=cfg.tensor_parallel_size,
                   batch_size=cfg.batch_size, progress=cfg.progress, adapter=cfg.adapter,
                   **{k: getattr(cfg, k) for k in ENGINE_OPTIONS})

    def check_serves(self, cfg) -> None:
        """A config evaluated on this engine must ask for the model and load settings it holds."""
        want = (cfg.model, cfg.backend, cfg.dtype, cfg.tensor_parallel_size, *(getattr(cfg, k) for k in ENGINE_OPTIONS),
                cfg.adapter)
        have = (self.model, self.backend_name, self.dtype, self.tensor_parallel_size, *self.options.values(),
                self.adapter)
        if want != have:
            names = ("model", "backend", "dtype", "tensor_parallel_size", *ENGINE_OPTIONS, "adapter")
            diff = ", ".join(f"{n} {h!r} vs {w!r}" for n, h, w in zip(names, have, want) if h != w)
            raise UserError(f"this engine was loaded with other settings than the evaluation asks for ({diff}); "
                            "make an engine for that config")

    # -- identity without loading weights
    @property
    def resolved(self):
        if self._resolved is None:
            from harness.core.models import resolve_model

            self._resolved = resolve_model(self.model)
        return self._resolved

    def weights_id(self) -> str | None:
        """A short identity of the weights (harness.core.fingerprint): a local folder's files, a hub
        model's cached revision (None when not cached), the alias's GGUF file name."""
        if self._weights_id is False:
            from harness.core.fingerprint import folder_fingerprint, hub_revision

            r = self.resolved
            if r.kind == "local":
                self._weights_id = folder_fingerprint(r.path)[:12]
            elif r.kind == "hub":
                rev = hub_revision(r.path)
                self._weights_id = rev[:12] if rev else None
            else:                                     # the alias: the GGUF file shipped in its package
                import hashlib
                from pathlib import Path

                src = Path(r.source)
                blob = f"{src.name}:{src.stat().st_size if src.is_file() else ''}"
                self._weights_id = hashlib.sha256(blob.encode()).hexdigest()[:12]
        return self._weights_id

    def model_identity(self) -> str:
        """What the settings hash sees: alias name + GGUF file, a local folder's absolute path, or
        the hub id (not the alias's cache folder, which moves with $IWSFT_CACHE), and the weights'
        identity: a retrained checkpoint in the same folder gets a run folder of its own."""
        r = self.resolved
        if r.kind == "alias":
            return f"alias:{r.info.get('alias', r.name)}:{r.info.get('gguf', '')}"
        w = self.weights_id()
        return f"{r.kind}:{r.path}" + (f"@{w}" if w else "")

    def resolved_adapter(self):
        """The adapter (checked against the model), or None."""
        if self.adapter is not None and self._adapter is None:
            from harness.evaluation.generation.adapter import check_adapter

            self._adapter = check_adapter(self.adapter, self.model, self.backend_kind())
        return self._adapter

    def backend_kind(self) -> str:
        from harness.evaluation.generation import resolve_backend_kind

        return resolve_backend_kind(self.backend_name)

    def resolved_dtype(self) -> str:
        """The explicit dtype "auto" means here (harness.evaluation.generation.precision)."""
        if self._dtype_resolved is None:
            from harness.evaluation.generation.precision import compute_device, resolve_dtype

            device = compute_device()
            path = self.resolved.path if device != "cpu" else self.model   # the config is read on CUDA only
            self._dtype_resolved = resolve_dtype(self.dtype, path, device, self.options["revision"])
        return self._dtype_resolved

    def load_options(self) -> dict:
        """The engine options this backend loads with, its defaults for this device filled in."""
        from harness.evaluation.generation import backend_class
        from harness.evaluation.generation.precision import compute_device

        cls = backend_class(self.backend_kind())
        given = {k: v for k, v in self.options.items() if k in cls.options}
        return {**dict.fromkeys(cls.options), **cls.default_options(compute_device()),
                **{k: v for k, v in given.items() if v is not None}}

    def settings(self) -> dict:
        """What of the engine changes outputs, for a run's settings (and its folder's hash): the
        resolved dtype, the generation libraries and their versions (samples of two engines or two
        versions never share a folder), and the load options that change the computation (not
        gpu_memory_utilization: memory only)."""
        from harness.core.versions import version_of
        from harness.evaluation.generation import backend_class

        cls = backend_class(self.backend_kind())
        opts = self.load_options()
        adapter = self.resolved_adapter()
        return {
            "dtype": self.resolved_dtype(),
            "generation_libraries": {lib: version_of(lib) for lib in cls.libraries},
            "engine_options": {k: v for k, v in sorted(opts.items()) if k != "gpu_memory_utilization"},
            # only with an adapter, so runs without one keep their hash; its files, not its path, say which
            **({"adapter": {"name": adapter.name, "files": adapter.identity(),
                            "peft": version_of("peft")}} if adapter is not None else {}),
        }

    # -- loaded on first use
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from harness.core.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.options["tokenizer"] or self.resolved,
                                             revision=None if self.options["tokenizer"] else self.options["revision"])
        return self._tokenizer

    @property
    def backend(self):
        if self._backend is None:
            from harness.evaluation.generation import make_backend

            import sys

            if not self.progress or not sys.stderr.isatty():   # a log gets no "Loading weights" bar
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            opts = {} if self.batch_size is None else {"batch_size": self.batch_size}
            load = self.load_options()
            if load.get("tokenizer") is not None:       # a name; the backend gets the loaded tokenizer too
                load["tokenizer_path"] = load.pop("tokenizer")
            load.pop("tokenizer", None)
            if self.adapter is not None:
                load["adapter"] = self.resolved_adapter()
            self._backend = make_backend(
                self.backend_kind(), self.model, tokenizer=self.tokenizer, dtype=self.resolved_dtype(),
                tensor_parallel_size=self.tensor_parallel_size, **opts, **load,
            )
        return self._backend

    def backend_info(self) -> dict:
        b = self._backend
        if b is None:
            return {"kind": self.backend_kind(), "name": None, "version": None}
        return {"kind": self.backend_kind(), "name": getattr(b, "name", None), "version": b.version()}

    def close(self) -> None:
        """Release the backend (and its accelerator memory) so the next model can load."""
        b, self._backend = self._backend, None
        if b is not None and hasattr(b, "close"):
            b.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- per-config work
    def prompt_ids(self, problem: Problem, cfg) -> list[int]:
        from harness.evaluation.generation.formats import format_of
        from harness.evaluation.generation.prompts import build_prompt_ids

        return list(build_prompt_ids(self.tokenizer, problem.question, format_of(cfg), system=cfg.system,
                                     chat_template_kwargs=cfg.chat_template_kwargs))

    def tokens_generated(self) -> int | None:
        """The loaded backend's running count of generated tokens (live progress), None if it keeps none."""
        return getattr(self._backend, "tokens_generated", None) if self._backend is not None else None

    def prompt_text(self, ids: list[int]) -> str:
        """The prompt as the model saw it, special tokens included (lm-eval's --log_samples "arguments")."""
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def check_format(self, cfg) -> None:
        """The thinking format against this tokenizer's chat template (the tokenizer loads, not the model)."""
        from harness.evaluation.generation.formats import check_template

        check_template(self.tokenizer, cfg.delimiters, cfg.chat_template_kwargs,
                       source=f"tokenizer {self.options['tokenizer'] or self.model!r}")

    def close_tokens(self, cfg) -> int:
        """Tokens of the forced close ("\\n<|im_start|>answer\\nFinal Answer:") after no thinking."""
        from harness.evaluation.generation.formats import format_of
        from harness.evaluation.generation.prompts import delimiter_ids

        return len(delimiter_ids(self.tokenizer, format_of(cfg)).final_answer_close)

    def budget(self, cfg, longest_prompt: int):
        from harness.evaluation.generation.budget import BudgetConfig
        from harness.evaluation.generation.formats import format_of
        from harness.evaluation.generation.prompts import delimiter_ids

        budget = BudgetConfig(thinking_budget=cfg.thinking_budget, num_wait=cfg.wait,
                              max_answer_tokens=cfg.answer_budget, total_budget=cfg.max_new_tokens,
                              mode=cfg.budget_mode, longest_prompt=longest_prompt)
        # fails before the model loads
        budget.resolve_caps([longest_prompt], delimiter_ids(self.tokenizer, format_of(cfg)))
        return budget

    def generate(self, cfg, prompts: list[list[int]], budget, seeds: list[int],
                 on_result: Callable[[int, Any], None]) -> None:
        from harness.evaluation.generation.budget import generate_with_budget
        from harness.evaluation.generation.formats import format_of
        from harness.evaluation.generation.sampling import sampling_kwargs

        generate_with_budget(self.backend, self.tokenizer, prompts, budget, format_of(cfg),
                             temperature=cfg.temperature, top_p=cfg.top_p, seed=seeds, on_result=on_result,
                             sampling=sampling_kwargs(cfg))
