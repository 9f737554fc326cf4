"""A thin adapter from the Backend contract (base.py) to `vllm.LLM` (GPU only; vllm is imported lazily).

Mapping (vLLM's documented offline API, `LLM.generate(prompts, sampling_params, use_tqdm=...)`):
- prompts are token ids: `TokensPrompt(prompt_token_ids=[...])` (a TypedDict, i.e. a plain dict);
- one `SamplingParams` per prompt (LLM.generate pairs a list with the prompts one by one):
  temperature, top_p, max_tokens, stop, stop_token_ids, min_tokens, seed, skip_special_tokens=False,
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

import os
from typing import Any, Sequence

from harness.core.errors import UserError
from harness.evaluation.generation.base import Completion, GenParams, cut_at_stop_string, decode, per_prompt_params

INSTALL_HINT = "pip install 'iwsft-harness[vllm]' (or `pip install vllm`) on a machine with a CUDA GPU"


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


class VLLMBackend:
    name = "vllm"
    tensor_parallel = True
    continuous_batching = True

    @classmethod
    def check_available(cls) -> None:
        import_vllm()

    @classmethod
    def load(cls, resolved: Any, *, tokenizer: Any = None, dtype: str | None = None, tensor_parallel_size: int = 1,
             batch_size: int | None = None, **opts: Any) -> "VLLMBackend":
        """vllm.LLM on the resolved path (an alias's cached HF folder), dtype default "auto"; `opts` go
        to the constructor (and on to vllm.LLM). batch_size does not apply: vLLM batches continuously."""
        return cls(resolved.path, dtype=dtype or "auto", tensor_parallel_size=tensor_parallel_size,
                   tokenizer=tokenizer, **opts)

    def __init__(self, model: str, *, dtype: str = "auto", tensor_parallel_size: int = 1,
                 tokenizer: Any = None, tokenizer_path: str | None = None, seed: int = 0,
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.9,
                 enable_prefix_caching: bool = True, use_tqdm: bool = False, **llm_kwargs: Any):
        vllm = import_vllm()
        self._vllm = vllm
        self.model_path = model
        self.use_tqdm = use_tqdm
        kwargs: dict[str, Any] = dict(
            model=model, dtype=str(dtype).replace("torch.", ""), tensor_parallel_size=int(tensor_parallel_size),
            enable_prefix_caching=enable_prefix_caching, seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        if tokenizer_path is not None:
            kwargs["tokenizer"] = tokenizer_path
        if max_model_len is not None:
            kwargs["max_model_len"] = int(max_model_len)
        kwargs.update(llm_kwargs)
        self.llm_kwargs = kwargs
        self.llm = vllm.LLM(**kwargs)
        self.tokenizer = tokenizer if tokenizer is not None else self.llm.get_tokenizer()
        self.eos_ids = self._eos_ids(model)

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

    def sampling_params(self, gp: GenParams):
        return self._vllm.SamplingParams(
            n=1,
            temperature=float(gp.temperature),
            top_p=float(gp.top_p),
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
            outs = self.llm.generate(reqs, sps, use_tqdm=self.use_tqdm)
            if len(outs) != len(send):
                raise RuntimeError(f"vLLM returned {len(outs)} outputs for {len(send)} prompts")
            for i, o in zip(send, outs):
                results[i] = self.normalise(o.outputs[0], plist[i])
        return results  # type: ignore[return-value]

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
