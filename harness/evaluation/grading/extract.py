"""Answer extraction from a full generated response (thinking + answer).

Rules (docs/method.md#answer-extraction-and-grading, s1's grader made deterministic):
- The answer section is the text after the LAST answer delimiter (default "<|im_start|>answer";
  pass "</think>" for models that close their thinking that way).
- Inside it: the last complete \\boxed{...} / \\fbox{...} (balanced braces), else the last
  "Answer:" / "Final Answer:" line, else the last "the answer is X".
- Only when the response has NO answer section may the thinking text be searched, and only with
  those explicit patterns. Never "the last number in the text": a truncated response that never
  states an answer yields None ("unextracted"), which grades as incorrect.
- An "Answer:" line that is only prose ("Answer: The number of ways is") gives the value on the next
  line or in the display block (\\[...\\], $$...$$) after it.
- Special tokens ("<|im_start|>", anything "<|...|>") are never part of an answer: a value is cut
  at the first one, and nothing is extracted when nothing precedes it.
- Multiple choice (GPQA): the LAST explicit answer (\\boxed{X}, "Answer: X", "answer is X", X in
  A-D, case-insensitive); only when there is none, the last bare upper-case "(X)" of the answer
  section (a lower-case "(a)" is a step label). No letter -> None; never a default letter (s1
  defaulted to "A"). Thinking text (no answer section) is read for explicit answers only.
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
_SPECIAL_TOKEN_RE = re.compile(r"<\|[^|<>\n]*\|>")
_DISPLAY_OPEN = ("\\[", "$$")
_DISPLAY_CLOSE = {"\\[": "\\]", "$$": "$$"}


def _before_special_token(value: str) -> str:
    """A chat-template token ends whatever answer text precedes it ("42<|im_end|>" -> "42")."""
    m = _SPECIAL_TOKEN_RE.search(value)
    return value if m is None else value[:m.start()]


def _last_match(pattern: re.Pattern, text: str) -> re.Match | None:
    last = None
    for last in pattern.finditer(text):
        pass
    return last


def _after_last(pattern: re.Pattern, text: str) -> str | None:
    last = _last_match(pattern, text)
    return None if last is None else text[last.end():].split("\n", 1)[0]


def _is_prose(value: str) -> bool:
    """More than one word and a word of 2+ letters outside LaTeX commands: a sentence, not a value."""
    return len(value.split()) > 1 and re.search(r"(?<![\\A-Za-z])[A-Za-z]{2,}", value) is not None


def _leading_block(text: str) -> str | None:
    """The first non-blank line of text, or the whole display block (\\[ ... \\] / $$ ... $$) when that
    line opens one without closing it; None when there is no such line or the block never closes."""
    lines = text.lstrip().split("\n")
    first = lines[0].strip()
    if not first:
        return None
    opener = next((o for o in _DISPLAY_OPEN if first.startswith(o)), None)
    if opener is None or _DISPLAY_CLOSE[opener] in first[len(opener):]:
        return first
    body = [first[len(opener):]]
    for line in lines[1:]:
        close = line.find(_DISPLAY_CLOSE[opener])
        if close >= 0:
            body.append(line[:close])
            return " ".join(x.strip() for x in body if x.strip()) or None
        body.append(line)
    return None  # truncated inside the block


def _answer_line(text: str) -> str | None:
    """What follows the LAST "Answer:" anchor: its line (or display block); when that line is prose
    without a single digit ("Answer: The number of ways is"), the line or block after it."""
    last = _last_match(_ANSWER_COLON_RE, text)
    if last is None:
        return None
    rest = text[last.end():]
    first = _leading_block(rest)
    if first is None or re.search(r"\d", first) or not _is_prose(first) or _ANSWER_IS_RE.search(first):
        return first
    after = rest.lstrip().split("\n", 1)
    following = _leading_block(after[1]) if len(after) > 1 else None
    return following if following is not None and not _is_prose(following) else first


def answer_section(response: str, delimiter: str | None = DEFAULT_DELIMITER) -> str | None:
    """Text after the last delimiter, or None when the response has no answer section. An empty
    delimiter (plain generation, no thinking phase) makes the whole response the answer section."""
    if delimiter == "":
        return response
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
    v = _before_special_token(value).strip()
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
        return _before_special_token(boxed).strip() or None
    line = _answer_line(text)  # "Final Answer:\n\n 5", "Answer: The count is\n$$5$$"
    if line is not None:
        value = _last_answer_is(line) or _clean_line(line)  # "Answer: The answer is 5." -> "5"
        if value is not None:
            return value
    return _last_answer_is(text)


# A unit after a number: at most three words, none of them a connective or verb ("25 dollars",
# "25 square units"; not "25 or 26", "25 is wrong").
UNIT_WORDS = (r"(?:\s+(?!(?:or|and|not|no|but|is|are|was|if|plus|minus|times|to|over|divided|by)\b)"
              r"[A-Za-z]+){1,3}")
_UNIT_VALUE_RE = re.compile(r"[+-]?\d[\d,]*(?:\.0+)?" + UNIT_WORDS)
_LONE_SYMBOL_RE = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?(?:\([^()]*\))?")  # x, a_5, f(3)


def stated_result(line: str) -> str | None:
    """The right-hand side of the final "=" of a line that states one result ("x = 5",
    "m + n = 37", "3 + 4 = 7"), or None: a sentence ("x = 3 and y = 5", "The total is 3 + 4 = 7")
    or an equation "2x + 3 = 0" (the "...=0" false positive of method.md)."""
    lhs, rhs = line.rsplit("=", 1)
    rhs = rhs.strip()
    if not rhs or any(not side.strip() or _is_prose(side) for side in lhs.split("=")):
        return None
    if (re.fullmatch(r"[+-]?0+(?:\.0*)?", rhs) and re.search(r"(?<!\\)[A-Za-z]", lhs)
            and not _LONE_SYMBOL_RE.fullmatch(lhs.strip())):
        return None
    return rhs


def _bare_answer(section: str) -> str | None:
    """The answer section's own first line when it states a value without a pattern ("4" or
    "4 + 0 = 4" -> its right-hand side). s1's judge read the whole answer section, so a bare
    stated value counts; this applies ONLY inside an answer section, never to thinking text."""
    first = _leading_block(_before_special_token(section))
    if first is None or len(first) > 64:
        return None
    value = _clean_line(stated_result(first) or "") if "=" in first else _clean_line(first)
    # A value, not prose ("I give up" is no answer); a number with a short unit ("25 dollars") is a value.
    return value if value and (not _is_prose(value) or _UNIT_VALUE_RE.fullmatch(value)) else None


def extract_answer(response: str, delimiter: str = DEFAULT_DELIMITER) -> str | None:
    """The final answer string of a response, or None when it states none."""
    section = answer_section(response, delimiter)
    if section is not None:
        explicit = extract_from(section)
        if explicit is not None or _BOX_RE.search(section) or _ANSWER_COLON_RE.search(section):
            return explicit  # an answer pattern that states nothing readable is not a bare value
        return _bare_answer(section)
    return extract_from(response)  # no answer section: explicit patterns only, never a bare number


# ---- multiple choice ---------------------------------------------------------------------------

_LETTER = r"([A-Da-d])"
_ANSWER_LEAD = r"(?i:answer)(?:\s+is)?[\s*:：]*\(?"
_EXPLICIT_CHOICE = [
    # \boxed{B}, \boxed{(B)}, \boxed{\text{B}}, \boxed{\textbf{(B)}}
    re.compile(r"\\(?:boxed|fbox)\s*\{\s*(?:\\text(?:bf)?\{)?\s*\(?" + _LETTER + r"\)?\s*\}?\s*\}"),
    # Answer: B / Answer: (B) / **Answer:** B / the answer is B. An upper-case letter may be followed
    # by more text ("Answer: B. 42 nm"); a lower-case one only by punctuation or the line end, so
    # that "Answer: a detailed derivation" is not read as choice A.
    re.compile(_ANSWER_LEAD + r"([A-D])\)?(?![A-Za-z0-9])"),
    re.compile(_ANSWER_LEAD + r"([a-d])\)?(?=[ \t]*(?:$|[.,;:!)\]*]))", re.MULTILINE),
]
# A bare upper-case (B) not glued to a word ("f(C)" is a function): only when no explicit answer
# exists; a lower-case "(a)" is a step or part label, never an option.
_BARE_CHOICE = re.compile(r"(?<![A-Za-z0-9_])\(([A-D])\)")


def _last_of(patterns: list[re.Pattern], text: str) -> str | None:
    best: tuple[int, str] | None = None
    for pat in patterns:
        for m in pat.finditer(text):
            if best is None or m.start(1) > best[0]:
                best = (m.start(1), m.group(1).upper())
    return best[1] if best else None


def extract_choice(response: str, delimiter: str = DEFAULT_DELIMITER) -> str | None:
    """The last explicitly stated letter A-D, else (answer section only) the last bare "(X)", else
    None. Never a default letter."""
    section = answer_section(response, delimiter)
    text = _before_special_token(section) if section is not None else response
    explicit = _last_of(_EXPLICIT_CHOICE, text)
    if explicit is not None or section is None:  # thinking text: explicit answers only
        return explicit
    return _last_of([_BARE_CHOICE], text)
