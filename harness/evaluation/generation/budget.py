"""s1 budget forcing (docs/method.md#budget-forcing), above the Backend interface, shared by every backend.

Per request:
  thinking: generate from prompt (which ends with the think prefix) until a thinking stop
            ("<|im_start|>"/"<|im_end|>" as token ids, or EOS) or the cap;
            natural stop with Waits left -> drop the stop token, append "Wait", continue;
  close:    cap hit -> "\\n<|im_start|>answer\\nFinal Answer:" (s1 drops the leading "\\n" when the
            thinking text already ends with one); natural end -> "<|im_start|>answer";
  answer:   generate until end of turn ("<|im_end|>" or EOS), at most max_answer_tokens.

Counting (token ids, never re-tokenized text):
  thinking_tokens = generated thinking tokens + injected Wait tokens (the Waits are part of the
  thinking the model conditions on, and s1 counts its thinking from the same token list). Removed
  stop tokens are not counted; the close string is not counted (neither thinking nor answer).
  answer_tokens = generated answer tokens (end-of-turn token excluded).

Modes:
  "independent" (default): the cap is exact: every continuation gets max_new_tokens = cap - thinking
    so far (Wait tokens included), so thinking_tokens <= cap always; a Wait is only injected when at
    least one token of budget remains after it. Each round submits only the requests that still need
    a generation, each at its own phase (thinking continuation or answer) with its own GenParams, so
    a request that finished thinking goes on to its answer in the next round without waiting for the
    others to finish thinking. (Within a round the backend call is synchronous: a batch returns when
    its longest row ends.)
  "s1-compat": s1's loop (simplescaling/s1, lm-evaluation-harness vllm_causallms.py): every round
    re-submits ALL unfinished requests together (a barrier per round), each round with the SAME
    max_tokens = cap (never decremented), so thinking can exceed the cap, up to (num_wait+1) * cap;
    with Waits, min_tokens = 1 in every thinking round (s1 sets it whenever thinking_n_ignore is
    given); after the Wait rounds the token ids the answer is conditioned on are cut to the cap (s1
    "Warning: Generated more than ... tokens. Cutting."), while the text keeps all of the thinking,
    as s1's logged output does; the close string follows the LAST round's finish reason; the answer
    phase runs for all requests together after all thinking is done. thinking_tokens counts the
    thinking before the cut (so it can exceed the cap); meta["s1_cut_tokens"] says how many were cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

from harness.core.errors import UserError
from harness.evaluation.generation.base import Backend, Completion, GenParams, decode
from harness.evaluation.generation.prompts import S1, DelimiterIds, Delimiters, delimiter_ids

CAP_MARGIN = 100  # s1: "Leave 100 tokens for answer"


@dataclass(frozen=True)
class BudgetConfig:
    thinking_budget: int | Literal["auto"] | None = "auto"  # cap on thinking tokens; None = no cap of its own:
                                            # the total less the prompt, the close and the answer's room
    num_wait: int = 0                       # times a natural end of thinking is replaced by "Wait"
    min_thinking_tokens: int = 0            # stop tokens are masked until this many thinking tokens
    max_answer_tokens: int | None = None    # None = whatever is left of total_budget
    total_budget: int = 32768               # s1: max_model_len / max_gen_toks (prompt included)
    mode: Literal["independent", "s1-compat"] = "independent"
    longest_prompt: int | None = None       # for "auto": longest prompt of the whole benchmark
                                            # (default: the longest prompt passed in this call)

    def __post_init__(self):
        tb = self.thinking_budget
        if not (tb is None or tb == "auto" or (isinstance(tb, int) and not isinstance(tb, bool) and tb >= 1)):
            raise UserError(f"thinking budget must be a positive token count, 'auto' or none, not {tb!r}")
        if self.num_wait < 0 or self.min_thinking_tokens < 0:
            raise UserError("num_wait and min_thinking_tokens must be >= 0")
        if self.max_answer_tokens is not None and self.max_answer_tokens < 1:
            raise UserError("max_answer_tokens must be >= 1")
        if self.total_budget < 1:
            raise UserError("total_budget must be >= 1")
        if self.mode not in ("independent", "s1-compat"):
            raise UserError(f"budget mode must be 'independent' or 's1-compat', not {self.mode!r}")

    def resolve_caps(self, prompt_lengths: Sequence[int], ids: DelimiterIds) -> list[int]:
        """Per-request cap. Prompts already end with the think prefix, so s1's
        `total - longest prompt - len(think prefix) - len(close) - 100` is `total - longest - len(close) - 100`
        here (close measured without its leading newline, as s1's `thinking_end_max_tok`)."""
        tb = self.thinking_budget
        close = len(ids.final_answer_close_no_newline)
        if tb == "auto":
            longest = max(self.longest_prompt or 0, max(prompt_lengths, default=0))
            cap = self.total_budget - longest - close - CAP_MARGIN
            if cap < 1:
                raise UserError(f"thinking budget 'auto' = {self.total_budget} - longest prompt {longest} - "
                                f"{close} - {CAP_MARGIN} = {cap} < 1; fix: raise the total budget")
            return [cap] * len(prompt_lengths)
        if tb is None:
            # no cap of its own: thinking may fill the context, less the close and the answer's room
            # (max_answer_tokens when given, else s1's 100 tokens)
            room = self.max_answer_tokens or CAP_MARGIN
            return [max(1, self.total_budget - n - close - room) for n in prompt_lengths]
        return [int(tb)] * len(prompt_lengths)


@dataclass
class ForcedResult:
    index: int                 # position in prompt_ids_list
    text: str                  # response after the prompt: thinking (with injected Waits), close, answer
    token_ids: list[int]       # response ids as the model saw them (thinking + close + answer)
    thinking_tokens: int       # generated + injected Wait tokens (see module docstring)
    answer_tokens: int
    num_waits_used: int
    hit_cap: bool              # thinking ended because it reached the cap (-> forced close)
    finish_reason: str         # of the answer phase: "stop" | "length"
    thinking_cap: int
    thinking_text: str = ""
    answer_text: str = ""
    close: str = ""            # the string appended after thinking
    meta: dict = field(default_factory=dict)
    # what the sampler put in `text`, not the model: [start, end, "wait" | "close"] character spans
    forced: list = field(default_factory=list)


@dataclass
class _Req:
    index: int
    prompt: list[int]
    cap: int
    seed: int | None
    thinking: list[int] = field(default_factory=list)
    waits: int = 0
    wait_at: list[int] = field(default_factory=list)   # thinking-token index of each injected Wait
    rounds: int = 0
    phase: str = "think"       # think -> answer -> done
    hit_cap: bool = False
    last_finish: str = ""      # finish reason of the latest thinking round
    close_ids: list[int] = field(default_factory=list)
    close_text: str = ""
    conditioned_thinking: list[int] | None = None  # s1-compat: thinking cut to the cap
    answer: list[int] = field(default_factory=list)
    answer_finish: str = ""
    meta: dict = field(default_factory=dict)


def _request_seed(seed: int | Sequence[int] | None, i: int, n: int) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, int):
        return int(seed) + 1_000_003 * i
    seeds = list(seed)
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} prompts")
    return None if seeds[i] is None else int(seeds[i])


def _round_seed(req: _Req) -> int | None:
    # a different stream per round of the same request, the same whatever the batch composition
    return None if req.seed is None else (req.seed + 7919 * req.rounds) % (2**63)


def generate_with_budget(backend: Backend, tokenizer: Any, prompt_ids_list: Sequence[Sequence[int]],
                         cfg: BudgetConfig, delimiters: Delimiters = S1, temperature: float = 0.0,
                         seed: int | Sequence[int] | None = None, top_p: float = 1.0,
                         on_result: Callable[[int, ForcedResult], None] | None = None,
                         sampling: dict | None = None) -> list[ForcedResult]:
    """Run budget forcing for every prompt (each already ending with the think prefix, as
    build_prompt_ids makes them). Returns one ForcedResult per prompt, in order; `on_result(index,
    result)` is called as each request completes. `seed`: one int (request i uses seed + 1000003*i)
    or one seed per request; each round then uses its own derived seed. `sampling`: further GenParams
    settings of every request (top_k, min_p, presence_penalty, repetition_penalty)."""
    ids = delimiter_ids(tokenizer, delimiters)
    prompts = [list(map(int, p)) for p in prompt_ids_list]
    n = len(prompts)
    if not delimiters.has_thinking:      # plain generation: no thinking phase, no cap, no close
        reqs = [_Req(index=i, prompt=p, cap=0, seed=_request_seed(seed, i, n), phase="answer")
                for i, p in enumerate(prompts)]
        ctx = _Ctx(backend, tokenizer, cfg, delimiters, ids, temperature, top_p, on_result, sampling)
        ctx.run_independent(reqs)
        return [ctx.results[i] for i in range(n)]
    caps = cfg.resolve_caps([len(p) for p in prompts], ids)
    reqs = [_Req(index=i, prompt=p, cap=caps[i], seed=_request_seed(seed, i, n)) for i, p in enumerate(prompts)]
    ctx = _Ctx(backend, tokenizer, cfg, delimiters, ids, temperature, top_p, on_result, sampling)
    if cfg.mode == "independent":
        ctx.run_independent(reqs)
    else:
        ctx.run_s1(reqs)
    return [ctx.results[i] for i in range(n)]


class _Ctx:
    def __init__(self, backend, tokenizer, cfg: BudgetConfig, delimiters: Delimiters, ids: DelimiterIds,
                 temperature: float, top_p: float, on_result, sampling: dict | None = None):
        self.backend = backend
        self.tok = tokenizer
        self.cfg = cfg
        self.delims = delimiters
        self.ids = ids
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.sampling = dict(sampling or {})
        self.on_result = on_result
        self.results: dict[int, ForcedResult] = {}
        self.thinking_stop_ids = tuple(dict.fromkeys(ids.thinking_stop_ids))

    # ---------------------------------------------------------------------------- params

    def think_params(self, r: _Req, max_new: int, min_tokens: int) -> GenParams:
        return GenParams(max_new_tokens=max_new, temperature=self.temperature, top_p=self.top_p,
                         stop=tuple(self.ids.thinking_stop_strings), stop_token_ids=self.thinking_stop_ids,
                         min_tokens=max(0, min(min_tokens, max_new)), seed=_round_seed(r), **self.sampling)

    def answer_params(self, r: _Req) -> tuple[list[int], GenParams | None]:
        thinking = r.conditioned_thinking if r.conditioned_thinking is not None else r.thinking
        prompt = r.prompt + thinking + r.close_ids
        room = self.cfg.total_budget - len(prompt)
        max_new = room if self.cfg.max_answer_tokens is None else min(self.cfg.max_answer_tokens, room)
        if max_new < 1:
            return prompt, None
        return prompt, GenParams(max_new_tokens=max_new, temperature=self.temperature, top_p=self.top_p,
                                 stop=tuple(self.ids.answer_stop_strings),
                                 stop_token_ids=tuple(self.ids.answer_stop_ids), seed=_round_seed(r),
                                 **self.sampling)

    # ---------------------------------------------------------------------------- phases

    def close(self, r: _Req, capped: bool) -> None:
        r.hit_cap = capped
        if capped:
            ends_nl = decode(self.tok, r.thinking).endswith("\n")
            if self.delims.close_skips_newline_after_newline and ends_nl:
                r.close_ids = list(self.ids.final_answer_close_no_newline)
            else:
                r.close_ids = list(self.ids.final_answer_close)
        else:
            r.close_ids = list(self.ids.answer_prefix)
        r.close_text = decode(self.tok, r.close_ids)
        r.phase = "answer"

    def finish(self, r: _Req, out: Completion | None) -> None:
        if out is None:  # no room left in total_budget for an answer
            r.answer, r.answer_finish = [], "length"
            r.meta["no_room_for_answer"] = True
        else:
            r.answer, r.answer_finish = list(out.token_ids), out.finish_reason
        r.phase = "done"
        thinking_seen = r.conditioned_thinking if r.conditioned_thinking is not None else r.thinking
        token_ids = thinking_seen + r.close_ids + r.answer
        thinking_text = decode(self.tok, r.thinking)
        answer_text = decode(self.tok, r.answer)
        text = decode(self.tok, r.thinking + r.close_ids + r.answer)
        res = ForcedResult(
            index=r.index,
            text=text,
            token_ids=token_ids,
            thinking_tokens=len(r.thinking),
            answer_tokens=len(r.answer),
            num_waits_used=r.waits,
            hit_cap=r.hit_cap,
            finish_reason=r.answer_finish,
            thinking_cap=r.cap,
            thinking_text=thinking_text,
            answer_text=answer_text,
            close=r.close_text,
            meta={**r.meta, "thinking_rounds": r.rounds, "mode": self.cfg.mode},
            forced=self.forced_spans(r, text, thinking_text),
        )
        self.results[r.index] = res
        if self.on_result is not None:
            self.on_result(r.index, res)

    def forced_spans(self, r: _Req, text: str, thinking_text: str) -> list[list]:
        """Character spans of each injected Wait and of the close in `text` (for `iwsft view`). A span
        whose prefix does not decode to a prefix of `text` (a character split across tokens) is left out."""
        spans = []
        for at in r.wait_at:
            a, b = decode(self.tok, r.thinking[:at]), decode(self.tok, r.thinking[:at + len(self.ids.wait)])
            if text.startswith(b) and b.startswith(a) and len(b) > len(a):
                spans.append([len(a), len(b), "wait"])
        if r.close_ids:
            end = decode(self.tok, r.thinking + r.close_ids)
            if text.startswith(end) and end.startswith(thinking_text) and len(end) > len(thinking_text):
                spans.append([len(thinking_text), len(end), "close"])
        return spans

    def _generate(self, prompts: list[list[int]], params: list[GenParams]) -> list[Completion]:
        outs = self.backend.generate(prompts, params)
        if len(outs) != len(prompts):
            raise RuntimeError(f"backend returned {len(outs)} completions for {len(prompts)} prompts")
        return outs

    # ---------------------------------------------------------------------------- independent

    def run_independent(self, reqs: list[_Req]) -> None:
        cfg = self.cfg
        wait = self.ids.wait
        while True:
            batch: list[tuple[_Req, list[int], GenParams | None]] = []
            for r in reqs:
                if r.phase == "think":
                    # the cap, and never past the context (total_budget) for an explicit oversized cap
                    max_new = min(r.cap - len(r.thinking), cfg.total_budget - len(r.prompt) - len(r.thinking))
                    if max_new >= 1:
                        need_min = cfg.min_thinking_tokens - len(r.thinking)
                        batch.append((r, r.prompt + r.thinking, self.think_params(r, max_new, need_min)))
                        continue
                    r.meta["context_full"] = True
                    self.close(r, capped=True)
                if r.phase == "answer":
                    prompt, gp = self.answer_params(r)
                    batch.append((r, prompt, gp))
            if not batch:
                return
            send = [(r, p, gp) for r, p, gp in batch if gp is not None]
            outs = self._generate([p for _, p, _ in send], [gp for _, _, gp in send]) if send else []
            by_req = {id(r): o for (r, _, _), o in zip(send, outs)}
            for r, _, gp in batch:
                out = by_req.get(id(r))
                if r.phase == "answer":
                    self.finish(r, out)
                    continue
                r.rounds += 1
                r.thinking += list(out.token_ids)
                r.last_finish = out.finish_reason
                if len(r.thinking) > r.cap:  # a backend that ignored max_new_tokens
                    raise RuntimeError(f"backend returned {len(out.token_ids)} tokens, more than the "
                                       f"{gp.max_new_tokens} allowed")
                if out.finish_reason == "length":
                    self.close(r, capped=True)
                elif (r.waits < cfg.num_wait and wait
                      and min(r.cap, cfg.total_budget - len(r.prompt)) - len(r.thinking) - len(wait) >= 1):
                    r.wait_at.append(len(r.thinking))
                    r.thinking += wait
                    r.waits += 1
                else:
                    if r.waits < cfg.num_wait:
                        r.meta["waits_skipped_no_budget"] = cfg.num_wait - r.waits
                    self.close(r, capped=False)

    # ---------------------------------------------------------------------------- s1-compat

    def run_s1(self, reqs: list[_Req]) -> None:
        cfg = self.cfg
        wait = self.ids.wait
        min_tokens = max(cfg.min_thinking_tokens, 1) if cfg.num_wait > 0 else cfg.min_thinking_tokens
        active = list(reqs)
        for i in range(cfg.num_wait + 1):
            if not active:
                break
            # s1: max_tokens = cap every round; vLLM's max_model_len (total_budget) still bounds it
            params = [self.think_params(r, max(1, min(r.cap, cfg.total_budget - len(r.prompt) - len(r.thinking))),
                                        min_tokens) for r in active]
            outs = self._generate([r.prompt + r.thinking for r in active], params)
            nxt = []
            for r, out in zip(active, outs):
                r.rounds += 1
                r.thinking += list(out.token_ids)
                r.last_finish = out.finish_reason
                if out.finish_reason == "length" or i == cfg.num_wait:
                    continue  # final for this request
                r.wait_at.append(len(r.thinking))
                r.thinking += wait
                r.waits += 1
                nxt.append(r)
            active = nxt
        for r in reqs:
            if len(r.thinking) > r.cap:
                r.conditioned_thinking = r.thinking[:r.cap]
                r.meta["s1_cut_tokens"] = len(r.thinking) - r.cap
            self.close(r, capped=(r.last_finish == "length"))
        batch = [(r, *self.answer_params(r)) for r in reqs]
        send = [(r, p, gp) for r, p, gp in batch if gp is not None]
        outs = self._generate([p for _, p, _ in send], [gp for _, _, gp in send]) if send else []
        by_req = {id(r): o for (r, _, _), o in zip(send, outs)}
        for r, _, _ in batch:
            self.finish(r, by_req.get(id(r)))
