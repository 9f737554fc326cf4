"""Prompt building and the thinking/answer delimiters (docs/method.md#evaluation-protocol).

The s1 format (ChatML models: Qwen2.5, SmolLM2): the chat template with the generation prompt, then
"<|im_start|>think"; thinking ends at "<|im_start|>" or "<|im_end|>"; the answer is introduced by
"<|im_start|>answer" (natural end of thinking) or "\\n<|im_start|>answer\\nFinal Answer:" (cap hit);
the answer ends at "<|im_end|>". `THINK_TAGS` is the same protocol for models that think inside
"<think> ... </think>" and end their turn at EOS (DeepSeek-R1 and its distills: the template's assistant
turn, whose generation prompt may already open "<think>\n"). `QWEN3` is Qwen3's: ChatML turns, thinking
inside "<think> ... </think>", the turn ending at "<|im_end|>"; its template reads `enable_thinking`
(harness.evaluation.generation.formats). `PLAIN` is plain generation: the chat
template with the generation prompt, no think prefix, no thinking phase and so no thinking cap; the
response, up to the end of turn, is the whole answer (how the paper's Qwen2.5-32B-Instruct row was
obtained) and the grader reads all of it as the answer section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from harness.core.errors import UserError


@dataclass(frozen=True)
class Delimiters:
    name: str = "s1"
    think_prefix: str = "<|im_start|>think"
    answer_prefix: str = "<|im_start|>answer"
    # thinking ends at any of these; single-token strings become stop token ids, others stop strings
    thinking_stops: tuple[str, ...] = ("<|im_start|>", "<|im_end|>")
    # the answer ends here; None = the tokenizer's EOS token
    end_of_turn: str | None = "<|im_end|>"
    final_answer_close: str = "\n<|im_start|>answer\nFinal Answer:"
    wait: str = "Wait"
    # s1 drops the leading "\n" of final_answer_close when the thinking text already ends with "\n"
    close_skips_newline_after_newline: bool = True

    @property
    def has_thinking(self) -> bool:
        """False for plain generation: nothing ends a thinking phase, so there is none (a property,
        not a field, so the settings hash of existing runs does not change)."""
        return bool(self.thinking_stops)


S1 = Delimiters()

THINK_TAGS = Delimiters(
    name="think-tags",
    think_prefix="<think>\n",
    answer_prefix="</think>\n\n",
    thinking_stops=("</think>",),
    end_of_turn=None,
    final_answer_close="\n</think>\n\nFinal Answer:",
    wait="Wait",
)

# Qwen3 (and QwQ): ChatML turns, "<think>"/"</think>" are tokens of their own; the model stops a turn at
# "<|im_end|>", also when it ends it without closing its thinking.
QWEN3 = Delimiters(
    name="qwen3",
    think_prefix="<think>\n",
    answer_prefix="</think>\n\n",
    thinking_stops=("</think>", "<|im_end|>"),
    end_of_turn="<|im_end|>",
    final_answer_close="\n</think>\n\nFinal Answer:",
    wait="Wait",
)

PLAIN = Delimiters(
    name="plain",
    think_prefix="",
    answer_prefix="",
    thinking_stops=(),
    end_of_turn=None,
    final_answer_close="",
    wait="",
)

PRESETS: dict[str, Delimiters] = {"s1": S1, "think-tags": THINK_TAGS, "qwen3": QWEN3, "plain": PLAIN}


def get_delimiters(name: str | Delimiters) -> Delimiters:
    if isinstance(name, Delimiters):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown delimiter preset '{name}'; choose one of {', '.join(PRESETS)}") from None


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` alone, no BOS/EOS added (how s1 tokenizes its injected strings)."""
    if not text:
        return []
    return list(tokenizer.encode(text, add_special_tokens=False))


def eos_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """EOS ids from the tokenizer and, when given, the model's generation config (may be a list)."""
    ids: list[int] = []
    for src in (getattr(tokenizer, "eos_token_id", None),
                getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if src is None:
            continue
        for i in (src if isinstance(src, (list, tuple)) else [src]):
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return ids


def split_stops(tokenizer: Any, stops: Sequence[str]) -> tuple[list[int], list[str]]:
    """Stop strings that are one token become stop token ids (exact, maskable by min_tokens); the rest
    stay stop strings."""
    ids: list[int] = []
    strings: list[str] = []
    for s in stops:
        enc = encode(tokenizer, s)
        if len(enc) == 1 and tokenizer.decode(enc) == s:
            if enc[0] not in ids:
                ids.append(enc[0])
        else:
            strings.append(s)
    return ids, strings


@dataclass(frozen=True)
class DelimiterIds:
    """Delimiters turned into token ids for one tokenizer."""

    think_prefix: list[int]
    answer_prefix: list[int]
    final_answer_close: list[int]
    final_answer_close_no_newline: list[int]
    wait: list[int]
    thinking_stop_ids: list[int]
    thinking_stop_strings: list[str]
    answer_stop_ids: list[int]
    answer_stop_strings: list[str]


def delimiter_ids(tokenizer: Any, delimiters: Delimiters) -> DelimiterIds:
    stop_ids, stop_strings = split_stops(tokenizer, delimiters.thinking_stops)
    if delimiters.end_of_turn is None:
        eot_ids, eot_strings = eos_token_ids(tokenizer), []
        if not eot_ids:
            raise UserError(f"delimiters '{delimiters.name}' end the answer at the EOS token, but the "
                            "tokenizer has none; fix: set end_of_turn")
    else:
        eot_ids, eot_strings = split_stops(tokenizer, [delimiters.end_of_turn])
    close = delimiters.final_answer_close
    return DelimiterIds(
        think_prefix=encode(tokenizer, delimiters.think_prefix),
        answer_prefix=encode(tokenizer, delimiters.answer_prefix),
        final_answer_close=encode(tokenizer, close),
        final_answer_close_no_newline=encode(tokenizer, close[1:] if close.startswith("\n") else close),
        wait=encode(tokenizer, delimiters.wait),
        thinking_stop_ids=stop_ids,
        thinking_stop_strings=stop_strings,
        answer_stop_ids=eot_ids,
        answer_stop_strings=eot_strings,
    )


def prompt_parts(tokenizer: Any, question: str, delimiters: Delimiters = S1,
                 system: str | None = None, chat_template_kwargs: dict | None = None) -> tuple[str, str]:
    """(chat-template text, think prefix to append after it). The template has the user turn and the
    generation prompt (and its default system prompt unless `system` is given). The prefix is "" when
    the template already ends with it (some R1-style templates add "<think>\\n"), so it is never doubled.
    `chat_template_kwargs` go to the template as variables (e.g. Qwen3's enable_thinking).
    The one prompt builder: the runner's token ids and the lm-eval tasks' text both come from here."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the tokenizer has no chat template, so the s1 prompt cannot be built; fix: use an "
                        "instruct/chat model or a tokenizer folder with chat_template.jinja")
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": question}
    ]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                         **(chat_template_kwargs or {}))
    prefix = delimiters.think_prefix
    return text, ("" if not prefix or text.endswith(prefix) else prefix)


def build_prompt_ids(tokenizer: Any, question: str, delimiters: Delimiters = S1,
                     system: str | None = None, chat_template_kwargs: dict | None = None) -> list[int]:
    """Token ids of the prompt: the template's ids, then the prefix's ids appended (as s1 does)."""
    text, prefix = prompt_parts(tokenizer, question, delimiters, system, chat_template_kwargs)
    return list(tokenizer.encode(text, add_special_tokens=False)) + (encode(tokenizer, prefix) if prefix else [])


def prompt_text(tokenizer: Any, question: str, delimiters: Delimiters = S1, system: str | None = None,
                chat_template_kwargs: dict | None = None) -> str:
    """The same prompt as text (for harnesses that take text, e.g. lm-eval)."""
    return "".join(prompt_parts(tokenizer, question, delimiters, system, chat_template_kwargs))
