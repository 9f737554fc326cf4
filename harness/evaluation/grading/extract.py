"""Answer extraction from a full generated response (thinking + answer).

Rules (docs/method.md#answer-extraction-and-grading, s1's grader made deterministic):
- The answer section is the text after the LAST answer delimiter (default "<|im_start|>answer";
  pass "</think>" for models that close their thinking that way).
- Inside it: the last complete \\boxed{...} / \\fbox{...} (balanced braces), else the last
  "Answer:" / "Final Answer:" line, else the last "the answer is X".
- Only when the response has NO answer section may the thinking text be searched, and only with
  those explicit patterns. Never "the last number in the text": a truncated response that never
  states an answer yields None ("unextracted"), which grades as incorrect.
- Multiple choice (GPQA): the LAST of \\boxed{X}, "Answer: X", "(X)" or "answer is X" with X in
  A-D, case-insensitive; no letter found -> None. There is no default letter (s1 defaulted to "A").
"""

from __future__ import annotations

import re

DEFAULT_DELIMITER = "<|im_start|>answer"

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_SPACE_RE = re.compile(r"\\boxed +([^\s{}$]+)")  # "\boxed 5" (valid TeX, seen in the wild)
# "Answer:" / "Final Answer:" / "**Answer:**"; the value is the first non-empty line after the colon.
# Anchors only; the value is read after the LAST anchor, so "Answer: 1 ... Answer: 2" on one line
# gives 2. Single character classes, so a long whitespace run cannot make a failed match backtrack.
_ANSWER_COLON_RE = re.compile(r"answer[\s*]*[:：][ \t*]*", re.IGNORECASE)
_ANSWER_IS_RE = re.compile(r"\banswer\s+is\b[ \t]*:?", re.IGNORECASE)


def _after_last(pattern: re.Pattern, text: str, skip_blank_lines: bool = False) -> str | None:
    last = None
    for last in pattern.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end():]
    if skip_blank_lines:
        rest = rest.lstrip()
    return rest.split("\n", 1)[0]


def answer_section(response: str, delimiter: str = DEFAULT_DELIMITER) -> str | None:
    """Text after the last delimiter, or None when the response has no answer section."""
    if not delimiter:
        return None
    idx = response.rfind(delimiter)
    if idx < 0:
        return None
    return response[idx + len(delimiter):]


def _brace_matches(text: str) -> dict[int, int]:
    """Index of each "{" -> index of its matching "}", in one linear pass (a degenerate response
    with thousands of unclosed \\boxed{ must not make extraction quadratic). Escaped braces
    (\\{ \\}, LaTeX set braces) do not count."""
    matches: dict[int, int] = {}
    stack: list[int] = []
    j, n = 0, len(text)
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            stack.append(j)
        elif c == "}" and stack:
            matches[stack.pop()] = j
        j += 1
    return matches


def boxed_spans(text: str) -> list[tuple[int, str]]:
    """(start position, content) of every complete \\boxed{...}/\\fbox{...} and "\\boxed X".
    An unclosed (truncated) \\boxed{ is skipped."""
    out = []
    if "box" not in text:
        return out
    closing = _brace_matches(text)
    for m in _BOX_RE.finditer(text):
        open_idx = m.end() - 1
        if open_idx in closing:
            out.append((m.start(), text[open_idx + 1:closing[open_idx]]))
    for m in _BOX_SPACE_RE.finditer(text):
        out.append((m.start(), m.group(1)))
    out.sort()
    return out


def last_boxed(text: str) -> str | None:
    spans = boxed_spans(text)
    return spans[-1][1].strip() if spans else None


def _clean_line(value: str) -> str | None:
    """Trim an "Answer:"-style capture: whitespace, surrounding ** and $, trailing period."""
    v = value.strip()
    v = re.sub(r"^\*+|\*+$", "", v).strip()
    v = re.sub(r"[.。]+$", "", v).strip()
    if len(v) >= 2 and v.startswith("$") and v.endswith("$"):
        v = v.strip("$").strip()
    elif v.startswith("\\(") and v.endswith("\\)") or v.startswith("\\[") and v.endswith("\\]"):
        v = v[2:-2].strip()
    return v or None


def _last_answer_is(text: str) -> str | None:
    value = _after_last(_ANSWER_IS_RE, text)
    if value is None:
        return None
    # End at the first sentence boundary: ". " / ".$" (a decimal point "2.5" is not followed by a space).
    value = re.split(r"\.(?:\s|$)", value, maxsplit=1)[0]
    return _clean_line(value)


def extract_from(text: str) -> str | None:
    """The explicit-pattern cascade on one piece of text."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed or None
    line = _after_last(_ANSWER_COLON_RE, text, skip_blank_lines=True)  # "Final Answer:\n\n 5"
    if line is not None:
        value = _last_answer_is(line) or _clean_line(line)  # "Answer: The answer is 5." -> "5"
        if value is not None:
            return value
    return _last_answer_is(text)


def _bare_answer(section: str) -> str | None:
    """The answer section's own first line when it states a value without a pattern ("4" or
    "4 + 0 = 4" -> its right-hand side). s1's judge read the whole answer section, so a bare
    stated value counts; this applies ONLY inside an answer section, never to thinking text."""
    lines = [l.strip() for l in section.replace("<|im_end|>", "\n").splitlines() if l.strip()]
    if not lines or len(lines[0]) > 64:
        return None
    value = lines[0].rsplit("=", 1)[-1].strip().rstrip(".").strip()
    # A value, not prose: one word, or no letters outside LaTeX commands ("I give up" is no answer).
    looks_like_value = len(value.split()) <= 1 or not re.search(r"(?<!\\)\b[A-Za-z]{2,}", value)
    return value if value and looks_like_value else None


def extract_answer(response: str, delimiter: str = DEFAULT_DELIMITER) -> str | None:
    """The final answer string of a response, or None when it states none."""
    section = answer_section(response, delimiter)
    if section is not None:
        return extract_from(section) or _bare_answer(section)
    return extract_from(response)  # no answer section: explicit patterns only, never a bare number


# ---- multiple choice ---------------------------------------------------------------------------

_LETTER = r"([A-Da-d])"
_ANSWER_LEAD = r"(?i:answer)(?:\s+is)?[\s*:：]*\(?"
_CHOICE_PATTERNS = [
    # \boxed{B}, \boxed{(B)}, \boxed{\text{B}}, \boxed{\textbf{(B)}}
    re.compile(r"\\(?:boxed|fbox)\s*\{\s*(?:\\text(?:bf)?\{)?\s*\(?" + _LETTER + r"\)?\s*\}?\s*\}"),
    # Answer: B / Answer: (B) / **Answer:** B / the answer is B. An upper-case letter may be followed
    # by more text ("Answer: B. 42 nm"); a lower-case one only by punctuation or the line end, so
    # that "Answer: a detailed derivation" is not read as choice A.
    re.compile(_ANSWER_LEAD + r"([A-D])\)?(?![A-Za-z0-9])"),
    re.compile(_ANSWER_LEAD + r"([a-d])\)?(?=[ \t]*(?:$|[.,;:!)\]*]))", re.MULTILINE),
    # (B) not glued to a word, so "f(c)" is not read as choice C
    re.compile(r"(?<![A-Za-z0-9_])\(" + _LETTER + r"\)"),
]


def _last_choice_in(text: str) -> str | None:
    best: tuple[int, str] | None = None
    for pat in _CHOICE_PATTERNS:
        for m in pat.finditer(text):
            pos = m.start(1)
            if best is None or pos > best[0]:
                best = (pos, m.group(1).upper())
    return best[1] if best else None


def extract_choice(response: str, delimiter: str = DEFAULT_DELIMITER) -> str | None:
    """The last explicitly stated letter A-D, or None. Never a default letter."""
    section = answer_section(response, delimiter)
    return _last_choice_in(section if section is not None else response)
