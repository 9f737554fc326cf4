"""Generation benchmark: HF backend tokens/s with and without budget forcing, at the same total tokens.

A random-init Qwen2.5 shape (bf16 on a GPU), `prompts` prompts of `prompt_len` tokens, greedy:

- plain     one generate() call; every row makes exactly `new_tokens` tokens (stops masked by min_tokens)
- forced    generate_with_budget (independent mode, the default) with `waits` Waits: thinking cap =
            new_tokens - answer_tokens, answer = answer_tokens. A random model never ends its thinking
            by itself, so a logits hook makes it emit the end-of-thinking token every cap/(waits+1)
            tokens: each of the first `waits` ends becomes "Wait" + a new round (a new prefill of the
            whole context: the HF backend does not keep the KV cache across rounds), then the cap
            closes the thinking and the answer round runs. Total generated tokens = plain's, give or
            take the Wait tokens (which are injected, not generated).

Reported: wall time, generated tokens, tokens/s, and forced/plain time per generated token.
"""

from __future__ import annotations

import time

import torch

from harness.perf.train_bench import qwen2_model, run_header, sync


class _Hooked(torch.nn.Module):
    """The model, with logits beyond the tokenizer's vocabulary masked (so every sampled id decodes)
    and, when `period` is set, the end-of-thinking token forced every `period` generated tokens."""

    def __init__(self, model, n_valid: int, prompt_len: int, stop_id: int | None = None, period: int | None = None):
        super().__init__()
        self.model, self.config = model, model.config
        self.generation_config = getattr(model, "generation_config", None)
        self.n_valid, self.prompt_len, self.stop_id, self.period = n_valid, prompt_len, stop_id, period

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=None, logits_to_keep=0):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, use_cache=use_cache, logits_to_keep=logits_to_keep)
        logits = out.logits
        logits[..., self.n_valid:] = float("-inf")
        if self.period:
            produced = position_ids[:, -1] + 1 - self.prompt_len      # index of the token being chosen
            hit = (produced > 0) & (produced % self.period == 0)
            logits[hit, -1, self.stop_id] = float("inf")
        return out


def bench_generation(tokenizer, shape: str = "0.5B", prompts: int = 64, prompt_len: int = 128, new_tokens: int = 1024,
                     answer_tokens: int = 64, waits: int = 2, vocab: int = 151936, device: str | None = None,
                     repeats: int = 1) -> dict:
    from harness.evaluation.generation.budget import BudgetConfig, generate_with_budget
    from harness.evaluation.generation.base import GenParams
    from harness.evaluation.generation.hf import HFBackend
    from harness.evaluation.generation.prompts import S1, delimiter_ids

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n_valid = len(tokenizer)
    vocab = max(vocab, n_valid)
    torch.manual_seed(0)
    model = qwen2_model(shape, vocab, device, max_positions=32768).to(dtype).eval()
    ids = delimiter_ids(tokenizer, S1)
    g = torch.Generator().manual_seed(1)
    body = torch.randint(1000, min(n_valid, 30000), (prompts, prompt_len - len(ids.think_prefix)), generator=g)
    prompt_ids = [row.tolist() + list(ids.think_prefix) for row in body]
    cap = new_tokens - answer_tokens
    period = -(-cap // (waits + 1)) if waits else None   # ceil: the (waits+1)-th end would fall at/after the cap

    def timed(fn):
        best = None
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            res = fn()
            sync(device)
            dt_ = time.perf_counter() - t0
            best = (dt_, res) if best is None or dt_ < best[0] else best
        return best

    plain_backend = HFBackend(_Hooked(model, n_valid, prompt_len), tokenizer, batch_size=prompts)
    gp = GenParams(max_new_tokens=new_tokens, min_tokens=new_tokens)
    plain_backend.generate([prompt_ids[0][:8]], GenParams(max_new_tokens=4))      # warm-up (kernels, allocator)
    t_plain, outs = timed(lambda: plain_backend.generate(prompt_ids, gp))
    n_plain = sum(len(o.token_ids) for o in outs)

    hooked = _Hooked(model, n_valid, prompt_len, stop_id=ids.thinking_stop_ids[0], period=period)
    forced_backend = HFBackend(hooked, tokenizer, batch_size=prompts)
    cfg = BudgetConfig(thinking_budget=cap, num_wait=waits, max_answer_tokens=answer_tokens,
                       total_budget=prompt_len + new_tokens + 64)

    t_forced, results = timed(lambda: generate_with_budget(forced_backend, tokenizer, prompt_ids, cfg, delimiters=S1))
    n_forced = sum(r.thinking_tokens - r.num_waits_used * len(ids.wait) + r.answer_tokens for r in results)
    rows = [
        {"mode": "plain", "time_s": t_plain, "generated_tokens": n_plain, "tokens_per_s": n_plain / t_plain, "rounds": 1},
        {"mode": f"forced ({waits} Wait)", "time_s": t_forced, "generated_tokens": n_forced,
         "tokens_per_s": n_forced / t_forced,
         "rounds": max(r.meta.get("thinking_rounds", 0) for r in results) + 1,
         "waits_used_mean": sum(r.num_waits_used for r in results) / len(results),
         "hit_cap_frac": sum(r.hit_cap for r in results) / len(results),
         "thinking_tokens_mean": sum(r.thinking_tokens for r in results) / len(results),
         "answer_tokens_mean": sum(r.answer_tokens for r in results) / len(results)},
    ]
    rows[1]["time_per_token_vs_plain"] = (t_forced / max(n_forced, 1)) / (t_plain / max(n_plain, 1))
    return {
        **run_header(device),
        "settings": {"shape": shape, "params": sum(p.numel() for p in model.parameters()), "vocab": vocab,
                     "dtype": str(dtype).removeprefix("torch."), "prompts": prompts, "prompt_len": prompt_len,
                     "new_tokens": new_tokens, "answer_tokens": answer_tokens, "waits": waits,
                     "thinking_cap": cap, "forced_end_every": period, "backend": "hf (one batch, greedy, KV cache "
                     "within a round, re-prefill between rounds)", "repeats": repeats},
        "rows": rows,
    }


def print_table(result: dict, console) -> None:
    from rich.table import Table

    s = result["settings"]
    t = Table(title=f"HF generation on {result['device']}: {s['shape']} {s['dtype']}, {s['prompts']} prompts x "
                    f"{s['new_tokens']} new tokens", title_justify="left")
    for col in ("mode", "rounds", "time s", "generated", "tok/s", "time/token vs plain"):
        t.add_column(col, justify="left" if col == "mode" else "right")
    for r in result["rows"]:
        t.add_row(r["mode"], str(r["rounds"]), f"{r['time_s']:.2f}", f"{r['generated_tokens']:,}",
                  f"{r['tokens_per_s']:,.0f}", f"{r['time_per_token_vs_plain']:.3f}" if "time_per_token_vs_plain" in r else "1")
    console.print(t)
