"""Tokenizers with the real Qwen3 and DeepSeek-R1-Distill chat templates (tests/data/chat_templates,
see SOURCES.md there) on the embedded SmolLM2 vocabulary, plus the tokens those templates use."""

from __future__ import annotations

from pathlib import Path

TEMPLATES = Path(__file__).parent / "data" / "chat_templates"


def template_text(name: str) -> str:
    return (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")


def _copy(tokenizer, folder: Path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def qwen3_tokenizer(base, folder: Path):
    """Qwen3's template; "<think>"/"</think>" are tokens of their own (not special, as in Qwen3, so a
    decode keeps them); the turn ends at "<|im_end|>" (SmolLM2's EOS, as Qwen3's)."""
    tok = _copy(base, folder)
    tok.add_tokens(["<think>", "</think>"], special_tokens=False)
    tok.chat_template = template_text("qwen3")
    return tok


def r1_tokenizer(base, folder: Path):
    """DeepSeek-R1-Distill's template; its BOS/EOS and turn markers are special tokens, "<think>"/"</think>"
    ordinary added tokens, as in the distills' tokenizer."""
    tok = _copy(base, folder)
    tok.add_special_tokens({"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>",
                            "additional_special_tokens": ["<｜User｜>", "<｜Assistant｜>"]})
    tok.add_tokens(["<think>", "</think>"], special_tokens=False)
    tok.chat_template = template_text("deepseek_r1_distill")
    return tok
