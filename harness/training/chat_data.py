"""Chat-form training data: `messages` conversations and `prompt`/`completion` pairs (TRL's formats).

Formats (TRL, docs "Dataset formats and types"):
    messages            [{role, content}, ...]: every assistant turn carries loss
    prompt_completion   prompt and completion both strings (standard: plain text, no chat template;
                        the tokenizer's eos is appended to the completion, as TRL does) or both message
                        lists (conversational: rendered as prompt + completion; the completion's
                        assistant turns carry loss, assistant turns inside the prompt do not)

The loss mask comes from the tokenizer's own chat template, not from a ChatML assumption. An
assistant turn i is the text between render(messages[:i], add_generation_prompt=True) and
render(messages[:i+1]): the model's answer through the end-of-turn the template writes (<|im_end|> for
Qwen, <|eot_id|> for Llama 3), without the whitespace the template adds after it (never generated,
generation stops at the end-of-turn). Text is tokenised piece by piece at those boundaries, so the
prompt's ids are the ones generation sees and no token straddles the mask's edge.
"""

from __future__ import annotations

from harness.core.errors import UserError

FORMATS = ("auto", "s1", "messages", "prompt_completion")


def resolve_format(rows: list[dict], cfg) -> str:
    """The recipe's data_format, or with `auto` the one the first row's columns name."""
    fmt = getattr(cfg, "data_format", "auto")   # recipes from before the key: auto
    if fmt not in FORMATS:
        raise UserError(f"data_format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt != "auto" or not rows:
        return "s1" if fmt == "auto" else fmt
    cols = set(rows[0])
    if "messages" in cols:
        return "messages"
    if {"prompt", "completion"} <= cols:
        return "prompt_completion"
    if cfg.question_column in cols:
        return "s1"
    raise UserError(f"dataset {cfg.dataset} has no column(s) of any data format: no `messages`, no `prompt` and "
                    f"`completion`, no s1 question column {cfg.question_column!r} (it has {sorted(cols)[:12]}); rename "
                    "its columns to one of those formats, or set question_column / data_format in the recipe")


def _is_messages(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value)


def conversation(row: dict, fmt: str, where: str) -> tuple[list[dict] | None, int, tuple[str, str] | None]:
    """(messages, index of the first message whose assistant turns carry loss, None) for chat rows, or
    (None, 0, (prompt, completion)) for standard prompt-completion text."""
    if fmt == "messages":
        msgs = row.get("messages")
        if not _is_messages(msgs):
            raise UserError(f"{where}: `messages` must be a non-empty list of {{role, content}} objects with string "
                            f"values (got {msgs!r:.60}); fix that row")
        if not any(m["role"] == "assistant" for m in msgs):
            raise UserError(f"{where}: the conversation has no assistant message, so nothing to train on; fix or remove that row")
        return msgs, 0, None
    prompt, completion = row.get("prompt"), row.get("completion")
    if isinstance(prompt, str) and isinstance(completion, str):
        if not completion:
            raise UserError(f"{where}: `completion` is empty, so nothing to train on; fix or remove that row")
        return None, 0, (prompt, completion)
    if _is_messages(prompt) and _is_messages(completion):
        if not any(m["role"] == "assistant" for m in completion):
            raise UserError(f"{where}: `completion` holds no assistant message; fix that row")
        return list(prompt) + list(completion), len(prompt), None
    raise UserError(f"{where}: `prompt` and `completion` must both be strings or both be lists of {{role, content}} "
                    f"messages (got {type(prompt).__name__} and {type(completion).__name__}); fix that row")


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


# Prefix diffing rather than return_assistant_tokens_mask: the shipped templates of Qwen2.5, Qwen3 and
# Llama 3 carry no {% generation %} markers (transformers then returns an all-zero mask); diffing needs none.
def chat_segments(tokenizer, messages: list[dict], loss_from: int, where: str) -> list[tuple[str, bool]]:
    """(text, carries loss) pieces of the rendered conversation, concatenating to its full render."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the tokenizer has no chat template, so chat data cannot be rendered; use a chat model's "
                        "tokenizer or the prompt_completion format with plain strings")
    full = _render(tokenizer, messages, False)
    pieces, at = [], 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or i < loss_from:
            continue
        head = _render(tokenizer, messages[:i], True) if i else ""
        turn = _render(tokenizer, messages[: i + 1], False)
        if not turn.startswith(head):
            raise UserError(f"{where}: the chat template's generation prompt is not how it renders assistant turn {i} "
                            "(DeepSeek-R1's prompt ends in <think> that its turns drop), so the turn's tokens cannot be "
                            "located; give the tokenizer a template whose turns start as its generation prompt")
        if not (full.startswith(turn) and len(head) >= at):
            raise UserError(f"{where}: the chat template renders assistant turn {i} differently once later turns "
                            "follow (Qwen3's drops earlier thinking), so its tokens cannot be located; keep one "
                            "assistant turn per row, or give the tokenizer a prefix-preserving chat template")
        body = turn[len(head):]
        if body.strip() and "".join(m["content"].split()) not in "".join(body.split()):   # whitespace aside (Llama 3 trims)
            raise UserError(f"{where}: the chat template drops part of assistant turn {i} (DeepSeek-R1's drops the "
                            "text up to </think>), so training would not see it; give the tokenizer a template that "
                            "renders the whole turn")
        end = len(head) + len(body.rstrip())     # the template's newline after the end-of-turn: no loss
        pieces += [(full[at:len(head)], False), (full[len(head):end], True)]
        at = end
    pieces.append((full[at:], False))
    if not any(loss and text for text, loss in pieces):
        raise UserError(f"{where}: the chat template renders no assistant text (the loss mask would be empty); use "
                        "a template that writes assistant turns, or another data_format")
    return [(t, loss) for t, loss in pieces if t]


def segments(row: dict, tokenizer, fmt: str, where: str) -> list[tuple[str, bool]]:
    messages, loss_from, plain = conversation(row, fmt, where)
    if plain is not None:
        eos = tokenizer.eos_token or ""
        prompt, completion = plain
        return [(t, loss) for t, loss in ((prompt, False), (completion, True),
                                          ("" if completion.endswith(eos) else eos, True)) if t]
    return chat_segments(tokenizer, messages, loss_from, where)


def check_rows(rows: list[dict], cfg, fmt: str) -> None:
    """Every row has the format's columns (and the score column when set)."""
    from harness.training.data import row_label

    if not rows:
        raise UserError(f"dataset {cfg.dataset} is empty; point `dataset` at a file or hub id with rows")
    needed = (["messages"] if fmt == "messages" else ["prompt", "completion"]) + ([cfg.score_column] if cfg.score_column else [])
    for i, r in enumerate(rows):
        missing = [c for c in needed if r.get(c) is None]
        if missing:
            raise UserError(f"{row_label(rows, i, cfg.dataset)}: row has no (or null) column(s) {missing} for data_format "
                            f"{fmt}; fix or remove that row, or set data_format")
    if cfg.completion_column or cfg.forced_column:
        raise UserError(f"completion_column / forced_column belong to the s1 format, not {fmt}; unset them or set data_format=s1")
