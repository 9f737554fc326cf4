"""Thinking formats: a delimiters preset (prompts.PRESETS) plus the chat template's keyword arguments.

`resolve_format(name, chat_template_kwargs)` is the Delimiters a run uses. For the "<think>"-tag
formats (think-tags, qwen3), `enable_thinking: false` turns the thinking phase off: Qwen3's template
then ends the prompt with an empty "<think>\\n\\n</think>\\n\\n" block, so there is no think prefix, no
cap, no close, and the whole response is the answer (as `plain`, but ending at the format's end of turn).

`check_template(tokenizer, ...)`: enable_thinking (asked for by qwen3, or given) must change what the
template renders; a template that ignores it would silently evaluate another protocol.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from harness.core.errors import UserError
from harness.evaluation.generation.prompts import Delimiters, get_delimiters

TAG_FORMATS = ("think-tags", "qwen3")        # thinking inside <think> ... </think>
_PROBE = [{"role": "user", "content": "What is 1 + 1?"}]


def resolve_format(name: str | Delimiters, chat_template_kwargs: dict | None = None) -> Delimiters:
    delim = get_delimiters(name)
    thinking = (chat_template_kwargs or {}).get("enable_thinking")
    if thinking is None or thinking is True or not delim.has_thinking:
        return delim
    if thinking is not False:
        raise UserError(f"enable_thinking must be true or false, not {thinking!r}; fix: "
                        "--chat-template-kwargs '{\"enable_thinking\": false}'")
    if delim.name not in TAG_FORMATS:
        raise UserError(f"enable_thinking=false turns thinking off in the template, but --thinking-format {delim.name} "
                        "would still open a thinking phase; fix: --thinking-format qwen3 (or plain)")
    return replace(delim, think_prefix="", answer_prefix="", thinking_stops=(), final_answer_close="", wait="")


def format_of(cfg) -> Delimiters:
    """The Delimiters of an EvalConfig."""
    return resolve_format(cfg.delimiters, cfg.chat_template_kwargs)


def parse_chat_template_kwargs(text: str | dict | None) -> dict | None:
    """A JSON object (from the CLI, a suite or lm-eval metadata) -> dict; None or {} -> None."""
    if text is None or isinstance(text, dict):
        value = text
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"--chat-template-kwargs is not JSON ({e.msg}); fix: a JSON object such as "
                            "'{\"enable_thinking\": true}'") from None
    if value is not None and not isinstance(value, dict):
        raise UserError(f"--chat-template-kwargs must be a JSON object, not {type(value).__name__}; "
                        "e.g. '{\"enable_thinking\": true}'")
    if value and not all(isinstance(k, str) and k.isidentifier() for k in value):
        raise UserError("--chat-template-kwargs keys must be template variable names (identifiers)")
    return dict(value) if value else None


def needs_template_check(name: str, chat_template_kwargs: dict | None) -> bool:
    return get_delimiters(name).name == "qwen3" or "enable_thinking" in (chat_template_kwargs or {})


def check_template(tokenizer: Any, name: str, chat_template_kwargs: dict | None = None,
                   source: str = "the tokenizer") -> None:
    """One UserError line when qwen3 / enable_thinking meets a template that ignores enable_thinking
    (the same text rendered with it true and false)."""
    if not needs_template_check(name, chat_template_kwargs):
        return
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{source} has no chat template; fix: use a chat model's tokenizer (--tokenizer)")
    on, off = (tokenizer.apply_chat_template(_PROBE, add_generation_prompt=True, tokenize=False,
                                             **{**(chat_template_kwargs or {}), "enable_thinking": flag})
               for flag in (True, False))
    if on == off:   # name only what was asked for: the format, or enable_thinking in --chat-template-kwargs
        given = "enable_thinking" in (chat_template_kwargs or {})
        why = "--thinking-format qwen3" if get_delimiters(name).name == "qwen3" else "enable_thinking"
        other = ("drop enable_thinking from --chat-template-kwargs" if given
                 else "another --thinking-format (s1, think-tags)")
        raise UserError(f"{why} needs a chat template that reads enable_thinking, but the template of {source} renders "
                        f"the same with it true and false; fix: a Qwen3 tokenizer (--tokenizer), or {other}")
