"""Hugging Face transformers backend: a small batched decode loop with a KV cache.

Not `model.generate()`: rows of a batch finish at different times, and the Backend contract (see
base.py) needs per-row stop tokens, stop strings, min_tokens, max_new_tokens, sampling settings and
seeds, with a stopped row never billed another token. The loop:

- left-pads the batch (pad positions masked out, position ids counted from each row's first real
  token, so a padded row computes exactly what it would alone, up to float rounding);
- prefills once, then feeds one token per live row per step, reusing the KV cache;
- drops finished rows from the batch and the cache;
- greedy (argmax) when a row's temperature is 0, else temperature + top-p sampling from a
  per-row torch.Generator seeded with GenParams.seed (so a row's sample does not depend on which
  other rows share its batch); top_k, min_p, presence and repetition penalties as vLLM applies them
  (generation/sampling.py), with transformers' logits processors.

Works on CPU and on one GPU (the model's device).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from harness.evaluation.generation.base import (
    Completion,
    GenParams,
    cut_at_stop_string,
    decode,
    per_prompt_params,
)
from harness.evaluation.generation.prompts import eos_token_ids
from harness.evaluation.generation.sampling import Penalties, truncate


class HFBackend:
    name = "hf"
    tensor_parallel = False
    continuous_batching = False
    libraries = ("transformers", "torch")       # their versions key a run's settings
    options = ("revision", "tokenizer")         # engine options it takes (harness.evaluation.engine)

    @classmethod
    def check_available(cls) -> None:
        pass    # transformers is a core dependency

    @classmethod
    def default_options(cls, device: str) -> dict:
        return {}

    @classmethod
    def load(cls, resolved: Any, *, tokenizer: Any = None, dtype: str | None = None, tensor_parallel_size: int = 1,
             batch_size: int | None = None, device: str | None = None, revision: str | None = None,
             tokenizer_path: str | None = None, adapter: Any = None) -> "HFBackend":
        """The model in `dtype` (default float32) on `device` (default: cuda if available, else cpu);
        `tokenizer_path` only names where the given `tokenizer` came from; `adapter` (generation/adapter.py)
        is merged into the weights."""
        import torch

        from harness.core.errors import UserError
        from harness.core.models import load_model, load_tokenizer

        if tensor_parallel_size != 1:
            raise UserError("the HF backend runs on one device; tensor_parallel_size > 1 needs --backend vllm")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = load_model(resolved, dtype=dtype or "float32", device=device, revision=revision)
        if adapter is not None:
            from harness.evaluation.generation.adapter import apply_to_hf_model

            model = apply_to_hf_model(model, adapter)
        tok = tokenizer if tokenizer is not None else load_tokenizer(tokenizer_path or resolved,
                                                                     revision=None if tokenizer_path else revision)
        return cls(model, tok, batch_size=batch_size or 16)

    def close(self) -> None:
        """Drop the model so its (GPU) memory can go before the next model loads."""
        import gc

        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16, eos_ids: Sequence[int] | None = None):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.eos_ids = list(eos_ids) if eos_ids is not None else eos_token_ids(tokenizer, model)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = self.eos_ids[0] if self.eos_ids else 0
        self.pad_id = int(pad)
        self.tokens_generated = 0  # running total, for throughput reports
        # only the last position's logits are needed (saves the prefill's vocab projection)
        try:
            import inspect

            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            params = {}
        self._extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        # transformers >= 5.2x names the KV cache `cache` (`past_key_values` warns as deprecated)
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def version(self) -> str:
        import torch
        import transformers

        return f"transformers {transformers.__version__}, torch {torch.__version__}"

    @classmethod
    def version_from_libraries(cls, libraries: dict) -> str:
        """What `version()` says, from a run's settings' generation_libraries (no backend loaded)."""
        return f"transformers {libraries.get('transformers')}, torch {libraries.get('torch')}"

    @property
    def device(self):
        return next(self.model.parameters()).device

    def generate(self, prompts: Sequence[Sequence[int]],
                 params: GenParams | Sequence[GenParams]) -> list[Completion]:
        plist = per_prompt_params(params, len(prompts))
        results: list[Completion | None] = [None] * len(prompts)
        todo = []
        for i, (p, gp) in enumerate(zip(prompts, plist)):
            if gp.max_new_tokens <= 0:
                results[i] = Completion(token_ids=[], text="", finish_reason="length")
            elif len(p) == 0:
                raise ValueError("empty prompt")
            else:
                todo.append(i)
        # longest first: similar lengths share a batch (less padding); results go back in order
        todo.sort(key=lambda i: -len(prompts[i]))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            outs = self._generate_batch([list(prompts[i]) for i in chunk], [plist[i] for i in chunk])
            for i, c in zip(chunk, outs):
                results[i] = c
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------------

    def _generate_batch(self, prompts: list[list[int]], plist: list[GenParams]) -> list[Completion]:
        import torch

        with torch.inference_mode():
            return self._decode_loop(prompts, plist)

    def _decode_loop(self, prompts: list[list[int]], plist: list[GenParams]) -> list[Completion]:
        import torch

        dev = self.device
        B = len(prompts)
        L = max(len(p) for p in prompts)
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((B, L), dtype=torch.long)
        for r, p in enumerate(prompts):
            input_ids[r, L - len(p):] = torch.tensor(p, dtype=torch.long)
            attn[r, L - len(p):] = 1
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        input_ids, attn, pos = input_ids.to(dev), attn.to(dev), pos.to(dev)

        rows = [_Row(self, gp, p) for gp, p in zip(plist, prompts)]
        out = self.model(input_ids=input_ids, attention_mask=attn, position_ids=pos, use_cache=True,
                         **self._extra)
        cache = out[self._cache_arg]
        logits = out.logits[:, -1, :]
        next_pos = pos[:, -1] + 1
        alive = list(range(B))  # batch row -> original row, for the rows still in the batch

        while True:
            tokens = _choose_all(rows, alive, logits)
            keep = [b for b, r in enumerate(alive) if not rows[r].push(tokens[b])]
            self.tokens_generated += len(alive)
            if not keep:
                break
            if len(keep) < len(alive):
                idx = torch.tensor(keep, dtype=torch.long, device=dev)
                _select_cache_rows(cache, idx)
                attn = attn.index_select(0, idx)
                next_pos = next_pos.index_select(0, idx)
                tokens = [tokens[b] for b in keep]
                alive = [alive[b] for b in keep]
            step_ids = torch.tensor(tokens, dtype=torch.long, device=dev).unsqueeze(1)
            attn = torch.cat([attn, torch.ones((len(alive), 1), dtype=attn.dtype, device=dev)], dim=1)
            out = self.model(input_ids=step_ids, attention_mask=attn, position_ids=next_pos.unsqueeze(1),
                             use_cache=True, **{self._cache_arg: cache}, **self._extra)
            cache = out[self._cache_arg]
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1
        return [r.completion() for r in rows]


def _choose_all(rows: list["_Row"], alive: list[int], logits) -> list[int]:
    """Next token of every alive row. Greedy rows share one masked argmax and one device sync (a
    per-row argmax costs a sync per row per step, which dominates small-model decoding on a GPU);
    sampling rows keep their own generator, so a request's stream does not depend on its batch."""
    import torch

    out: list[int | None] = [None] * len(alive)
    greedy = [b for b, r in enumerate(alive) if rows[r].gp.temperature <= 0 and not rows[r].penalties.active]
    if greedy:
        lg = (logits if len(greedy) == len(alive) else logits[greedy]).float()
        masked: dict[tuple[int, ...], list[int]] = {}     # stop ids -> rows still under min_tokens
        for j, b in enumerate(greedy):
            row = rows[alive[b]]
            if len(row.ids) < row.gp.min_tokens and row.all_stop:
                masked.setdefault(tuple(row.all_stop), []).append(j)
        if masked:
            lg = lg.clone() if lg.data_ptr() == logits.data_ptr() else lg
            for stop, js in masked.items():
                r_idx = torch.tensor(js, device=lg.device).unsqueeze(1)
                lg[r_idx, torch.tensor(stop, device=lg.device).unsqueeze(0)] = float("-inf")
        for j, tok in enumerate(torch.argmax(lg, dim=-1).tolist()):
            out[greedy[j]] = int(tok)
    for b, r in enumerate(alive):
        if out[b] is None:
            out[b] = rows[r].choose(logits[b])
    return out  # type: ignore[return-value]


def _select_cache_rows(cache: Any, idx) -> None:
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(idx)
        return
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for layer in layers:
            layer.batch_select_indices(idx)
        return
    raise RuntimeError(f"cannot drop finished rows from a {type(cache).__name__}")


class _Row:
    """Decode state of one request: sampling, stop checks, and its Completion."""

    def __init__(self, backend: HFBackend, gp: GenParams, prompt: Sequence[int] = ()):
        import torch

        self.tok = backend.tokenizer
        self.gp = gp
        self.penalties = Penalties(gp.repetition_penalty, gp.presence_penalty, prompt)
        self.stop_ids = set(int(i) for i in gp.stop_token_ids)
        self.eos_ids = set(backend.eos_ids)
        self.all_stop = sorted(self.stop_ids | self.eos_ids)
        self.stops = [s for s in gp.stop if s]
        self.window = (max(len(s) for s in self.stops) + 3) if self.stops else 0
        self.ids: list[int] = []
        self.finish: str | None = None
        self.stop_reason: str | int | None = None
        self.meta: dict = {}
        self.text: str | None = None
        self.generator = None
        if gp.temperature > 0:
            self.generator = torch.Generator(device=backend.device)
            seed = gp.seed if gp.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
            self.generator.manual_seed(int(seed))

    def choose(self, logits) -> int:
        import torch

        gp = self.gp
        logits = logits.float()
        if len(self.ids) < gp.min_tokens and self.all_stop:
            logits = logits.clone()
            logits[self.all_stop] = float("-inf")
        if self.penalties.active:
            logits = self.penalties.apply(logits)
        if gp.temperature <= 0:
            return int(torch.argmax(logits).item())
        probs = torch.softmax(truncate(logits / gp.temperature, gp.top_k, gp.min_p), dim=-1)
        if gp.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            cum = torch.cumsum(sorted_p, dim=-1)
            drop = (cum - sorted_p) > gp.top_p  # keep the smallest prefix reaching top_p (at least one)
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=self.generator)
            return int(order[choice].item())
        return int(torch.multinomial(probs, 1, generator=self.generator).item())

    def push(self, tok: int) -> bool:
        """Record a sampled token; True when the row is finished."""
        gp = self.gp
        n_before = len(self.ids)
        if n_before >= gp.min_tokens and tok in self.all_stop:
            self.finish, self.stop_reason = "stop", tok  # the stop token is not kept, not billed
            return True
        self.ids.append(tok)
        self.penalties.push(tok)
        if self.stops and len(self.ids) >= gp.min_tokens and self._stop_string_hit():
            return True
        if len(self.ids) >= gp.max_new_tokens:
            self.finish = "length"
            return True
        return False

    def _stop_string_hit(self) -> bool:
        tail = self.ids[-self.window:]
        now = decode(self.tok, tail)
        before = decode(self.tok, tail[:-1])
        # only a match that ends in the newest token's characters (earlier text was checked already)
        for s in self.stops:
            start = max(0, len(before) - len(s) + 1)
            if now.find(s, start) >= 0:
                cut = cut_at_stop_string(self.tok, self.ids, s)
                if cut is None:  # the window decode disagreed with the full decode; ignore
                    continue
                self.ids, self.text, inside = cut
                if inside:
                    self.meta["stop_inside_token"] = True
                self.finish, self.stop_reason = "stop", s
                return True
        return False

    def completion(self) -> Completion:
        text = self.text if self.text is not None else decode(self.tok, self.ids)
        return Completion(token_ids=list(self.ids), text=text, finish_reason=self.finish or "length",
                          stop_reason=self.stop_reason, meta=self.meta)
