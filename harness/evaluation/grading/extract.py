"""Answer extraction from a full generated response (thinking + answer).

Rules (docs/method.md#answer-extraction-and-grading, s1's grader made deterministic):
- The answer section is the text after the LAST answer delimiter (default "<|im_start|>answer";
  pass "</think>" for models that close their thinking that way; "" for plain output: the whole
  response).
- Inside it: the explicit answer stated LAST among the final \\boxed{...} / \\fbox{...} (balanced
  braces; boxes separated only by commas, "and" or spacing are one answer), the last "Answer:" /
  "Final Answer:" line (a sentence there gives the value it ends on), "Answer <math>" and the last
  "the answer is X". Without any: the section's first line when it is a value, else the value its
  last line states (grader 2; lm-eval / lighteval read plain output this way), never a value only
  mentioned or hedged ("I am not sure about 12", "not 10", "10 or 12").
- Only when the response has NO answer section may the thinking text be searched, and only with
  those explicit patterns. Never "the last number in the text": a truncated response that never
  states an answer yields None ("unextracted"), which grades as incorrect.
- An "Answer:" line that is only prose ("Answer: The number of ways is") gives the value on the next
  line or in the display block (\\[...\\], $$...$$) after it.
- Special tokens ("<|im_start|>", anything "<|...|>") are never part of an answer: a value is cut
  at the first one, and nothing is extracted when nothing precedes it.
- Multiple choice (GPQA): the LAST explicit answer (\\boxed{X}, "Answer: X", "answer is (for sure)
  X", "the correct option is X", "Final answer - X", "it's X"; X in A-D, case-insensitive); only
  when there is none, an answer section that opens with the letter ("D", "**C**", "(D)",
  "D. <option>", "Option C"), else the last bare upper-case "(X)" of the answer section (a
  lower-case "(a)" is a step label). A letter named with a rival or ruled out ("A or B", "not D",
  "between B and C", "Option A is wrong") is no answer. No letter -> None; never a default letter
  (s1 defaulted to "A"). Thinking text (no answer section) is read for explicit answers only.
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
# "Answer $ 9 $", "Answer \\[ 9 \\]": the word, then math that closes before the line ends (a
# display block may span lines; inline math may not).
_ANSWER_MATH_RE = re.compile(r"\banswer[ \t*]*(\$\$|\$|\\\[|\\\()", re.IGNORECASE)
_MATH_CLOSE = {"$$": re.compile(r"(?<!\\)\$\$"), "$": re.compile(r"(?<!\\)\$"), "\\[": re.compile(r"\\\]"),
               "\\(": re.compile(r"\\\)")}
_HASHES_RE = re.compile(r"^[ \t]*####[ \t]*", re.MULTILINE)
_LINE_END_RE = re.compile(r"[ \t.]*(?:\n|$)")
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
    value = re.sub(r"\\(?:begin|end)\s*\{\w*\*?\}", " ", value)  # \begin{pmatrix} is no word
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


def _box_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every complete \\boxed{...}/\\fbox{...} and "\\boxed X"."""
    out: list[tuple[int, int, str]] = []
    if "box" not in text:
        return out
    closing = _brace_matches(text)
    for m in _BOX_RE.finditer(text):
        open_idx = m.end() - 1
        if open_idx in closing:
            out.append((m.start(), closing[open_idx] + 1, text[open_idx + 1:closing[open_idx]]))
    for m in _BOX_SPACE_RE.finditer(text):
        out.append((m.start(), m.end(), m.group(1)))
    out.sort()
    return out


def boxed_spans(text: str) -> list[tuple[int, str]]:
    """(start position, content) of every complete \\boxed{...}/\\fbox{...} and "\\boxed X".
    An unclosed (truncated) \\boxed{ is skipped."""
    return [(a, c) for a, _, c in _box_spans(text)]


# What may separate the boxes of one answer split over several ("\boxed{(1,2)}, \boxed{(2,1)}",
# "\boxed{a} \quad \text{and} \quad \boxed{b}"): punctuation, math delimiters, spacing and "and";
# any other word or value means the earlier box was a step, not part of the answer.
_BOX_JOINER_RE = re.compile(
    r"(?:[\s,;$()\[\]]|\\[(),;!\[\] ]|\\q?quad\b|\\text\s*\{\s*(?:and|,)?\s*\}|\band\b|&|\\\\)*")


def final_boxed_span(text: str) -> tuple[int, str] | None:
    """(start, content) of the final answer's boxes: the last box, joined (", ") with the boxes
    right before it when only punctuation, spacing or "and" separates them."""
    spans = _box_spans(text)
    if not spans:
        return None
    parts = [spans[-1]]
    for prev in reversed(spans[:-1]):
        gap = text[prev[1]:parts[0][0]]
        if prev[1] > parts[0][0] or "\n\n" in gap or not _BOX_JOINER_RE.fullmatch(gap):
            break
        parts.insert(0, prev)
    contents: list[str] = []
    for _, _, c in parts:
        if c.strip() and c.strip() not in contents:  # "\boxed{4}, i.e. \boxed{4}" is one answer
            contents.append(c.strip())
    return parts[0][0], ", ".join(contents)


def last_boxed(text: str) -> str | None:
    span = final_boxed_span(text)
    return span[1].strip() if span else None


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


def _answer_math(text: str) -> tuple[int, str] | None:
    """(position, content) of the last "Answer <math>" without a colon whose math closes and ends
    its line ("Answer $ 9 $", "Answer \\[ 9 \\]"); the right side of a final "=" inside it."""
    for m in reversed(list(_ANSWER_MATH_RE.finditer(text))[-50:]):  # bounded work on degenerate text
        opener = m.group(1)
        close = _MATH_CLOSE[opener].search(text, m.end())
        if close is None:
            continue
        body = text[m.end():close.start()]
        if opener in ("$", "\\(") and "\n" in body:
            continue
        if not _LINE_END_RE.match(text, close.end()):
            continue
        body = body.strip()
        value = stated_result(body) if "=" in body else body
        return (m.start(), value.strip()) if value and value.strip() else None
    return None


# The value a sentence states at its end: after "=", "is", "are", "equals", ... ("The largest $n$ is
# 34", "the total comes to 25 dollars"); not a value merely mentioned ("I am not sure about 12").
_STATED_TAIL_RE = re.compile(
    r"(?:(?<![<>!])=|:|\b(?:is|are|was|were|equals?|be|get|gives?|of|to|it's)\b)[ \t]*"
    r"((?:\$[^$\n]+\$|\\\([^\n]{1,300}?\\\)|[+-]?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?\s*(?:%|\\%|[€£¥$])?"
    r"(?:[A-Za-z]{1,3}[²³])?)(?:[ \t]+[A-Za-z]+){0,3}?)"
    r"[ \t]*[.!]?[ \t*]*$", re.IGNORECASE)
# right before the stating word: "not 10", "could be 10", "might equal 10"
_HEDGE_BEFORE_RE = re.compile(r"\b(?:not|n't|never|or|either|maybe|perhaps|could|might|may|possibly)\s*$",
                              re.IGNORECASE)
# A sentence that doubts its own value states none ("I am not sure about $12$").
_DOUBT_RE = re.compile(r"\b(?:not sure|unsure|not certain|don't know|do not know|no idea|guess|cannot|can't|"
                       r"unclear|maybe|perhaps|either|or)\b", re.IGNORECASE)
# A sentence that concludes ("so", "therefore", "in total") may end in its value without a verb.
_CONCLUDING_RE = re.compile(r"\b(?:so|thus|therefore|hence|total|altogether|in all|overall|finally)\b", re.IGNORECASE)
_FINAL_NUMBER_RE = re.compile(r"(?<![\w.,/])([+-]?\d[\d,]*(?:\.\d+)?(?:/\d+)?\s*(?:%|\\%|[€£¥])?"
                              r"(?:[ \t]+[A-Za-z]+){0,3}?)[ \t]*[.!]?[ \t*]*$")
_MATH_SPAN_RE = re.compile(r"\$[^$\n]+\$|\\\([^\n]{1,300}?\\\)")
_RELATION_OP_RE = re.compile(r"<|>|\\[lg]eq?\b|\\[lg]t\b|\\neq?\b|!=")
_TEXT_GROUP_RE = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{[^{}]*\}")


def _as_value(line: str) -> str | None:
    """A line (or math span) read as a whole value, or None when it is prose: "x = 5" -> "5",
    "2 + 2 = 4" -> "4", "y = -x/2 + 1" and "x \\geq 5" kept whole (a line, a relation),
    "\\frac{1}{3} \\approx 0.33" -> "\\frac{1}{3}", "$28$ percent" -> "28\\%", "2x + 3 = 0" -> None."""
    v = _clean_line(line)
    if v is None:
        return None
    m = re.fullmatch(r"\$([^$]+)\$\s*((?:[A-Za-z]+\s*){0,3})", v)  # "$28$ percent", "$5$ cm"
    if m:
        v = f"{m.group(1).strip()} {m.group(2).strip()}".strip()
    v = re.sub(r"(?<=\d)\s*percent\b", "\\\\%", v)
    parts = re.split(r"\\approx|≈", v)  # the exact value before an approximation; "x \\approx 11": 11
    v = parts[0].strip() if len(parts) == 1 or not _LONE_SYMBOL_RE.fullmatch(parts[0].strip()) else parts[-1].strip()
    if not v:
        return None
    if _RELATION_OP_RE.search(v):
        return None if _is_prose(_TEXT_GROUP_RE.sub("", v)) else v
    if "=" in v:
        lhs, rhs = v.rsplit("=", 1)
        if ("=" not in lhs and _LONE_SYMBOL_RE.fullmatch(lhs.strip())
                and re.search(r"(?<![\\A-Za-z])[A-Za-z](?![A-Za-z])", re.sub(r"\\[A-Za-z]+", " ", rhs))):
            return v  # "y = -\\frac{1}{2}x + 3", "f(y) = y": the function, not its right side
        r = stated_result(v)
        return _clean_line(r) if r else None
    if not _is_prose(_TEXT_GROUP_RE.sub("", v)) or _UNIT_VALUE_RE.fullmatch(v):
        return v
    return None


def _sentences(line: str) -> list[str]:
    return [x for x in re.split(r"(?<=[.!?])\s+(?=[A-Z])|(?<=[.!?])$", line) if x.strip()]


def _sentence_value(sentence: str) -> str | None:
    """The value a prose sentence ends by stating, or its one math span when it holds no other
    number ("Therefore $x \\geq 5$ is the solution."); None when hedged ("not 10", "not sure")."""
    sentence = sentence.strip().rstrip(".!").strip()
    if _DOUBT_RE.search(sentence):
        return None
    m = _STATED_TAIL_RE.search(sentence)
    if m is None and _CONCLUDING_RE.search(sentence):  # "..., so she walks 12 km."
        m = _FINAL_NUMBER_RE.search(sentence)
    if m is None:
        spans = _MATH_SPAN_RE.findall(sentence)
        rest = _MATH_SPAN_RE.sub(" ", sentence)
        if len(spans) == 1 and not re.search(r"\d", rest):
            return _as_value(spans[0])
        return None
    value = m.group(1).strip()
    before = sentence[:m.start()]
    if sentence[m.start()] == "=" and m.re is _STATED_TAIL_RE:
        if "=" in before:  # "x = 3 and y = 5": several results, none of them the answer
            return None
        # the expression left of "=" after the last prose word: "3 + 4" of "The total is 3 + 4 = 7";
        # an equation "2x + 3 = 0" states no value (stated_result's rule)
        words = list(re.finditer(r"(?<![\\A-Za-z])[A-Za-z]{2,}\b", before))
        lhs = before[words[-1].end():] if words else before
        if stated_result(f"{lhs} = {value}") is None:
            return None
    if _HEDGE_BEFORE_RE.search(before) or (value.endswith(tuple("abcdefghijklmnopqrstuvwxyz"))
                                           and not _UNIT_VALUE_RE.fullmatch(value)):
        return None
    value = re.sub(r"(?<=\d)\s*(?:[€£¥]|[A-Za-z]{1,3}[²³])$", "", value)  # "1,000.99€", "12m²"
    return _as_value(value) if value.startswith(("$", "\\(")) else _clean_line(value)


def _line_value(line: str) -> str | None:
    """A line read as a stated value: the whole line when it is one ("$\\frac{1}{2}$", "x = 5"),
    else what its last sentence that holds a value ends by stating."""
    line = _before_special_token(line).strip()
    if not line:
        return None
    if len(line) <= 64:
        whole = _as_value(line)
        if whole is not None:
            return whole
    candidates = [x for x in _sentences(line) if re.search(r"\d|\$|\\\(", x)]
    return _sentence_value(candidates[-1]) if candidates else None


_NUMBER_TOKEN_RE = re.compile(r"(?<![\w.,/^_{])[+-]?\d[\d,]*(?:\.\d+)?(?:/\d+)?(?![\w^_])")


def _only_number(line: str) -> str | None:
    """The one number of an answer line's first sentence that states no other number or math
    ("Answer: She needs 25 more stamps."), unless the sentence doubts or negates it."""
    sentence = (_sentences(line) or [line])[0]
    if _DOUBT_RE.search(sentence) or re.search(r"\b(?:not|n't|never)\b", sentence) or _MATH_SPAN_RE.search(sentence):
        return None
    if re.search(r"\d\s*" + MULTIPLIERS, sentence, re.IGNORECASE):  # "10 thousand" is not 10
        return None
    numbers = _NUMBER_TOKEN_RE.findall(sentence)
    return numbers[0].rstrip(",") if len(numbers) == 1 else None


def _explicit_candidates(text: str) -> list[tuple[int, str]]:
    """(anchor position, value) of each explicit answer pattern's last occurrence."""
    out: list[tuple[int, str]] = []
    box = final_boxed_span(text)
    if box is not None:
        value = _before_special_token(box[1]).strip()
        if value:
            out.append((box[0], value))
    last = _last_match(_ANSWER_COLON_RE, text)
    line = _answer_line(text)  # "Final Answer:\n\n 5", "Answer: The count is\n$$5$$"
    if last is not None and line is not None:
        value = _last_answer_is(line) or _clean_line(line)  # "Answer: The answer is 5." -> "5"
        if value is not None and _is_prose(value) and not _UNIT_VALUE_RE.fullmatch(value):
            # "Final Answer: The largest $n$ is 34.", "Answer: She needs 25 more stamps."
            value = _line_value(value) or _only_number(value) or value
        if value is not None:
            out.append((last.start(), value))
    math = _answer_math(text)
    if math is not None:
        out.append(math)
    hashes = _last_match(_HASHES_RE, text)  # GSM8K's "#### 10", what lm-eval's gsm8k reads
    if hashes is not None:
        value = _clean_line(text[hashes.end():].split("\n", 1)[0])
        if value is not None:
            out.append((hashes.start(), value))
    is_match = _last_match(_ANSWER_IS_RE, text)
    if is_match is not None:
        value = _last_answer_is(text)
        if value is not None:
            out.append((is_match.start(), value))
    return out


def _states_value(value: str) -> bool:
    """A number, math or a short symbol; not prose and not a lone word ("the answer is correct")."""
    if _UNIT_VALUE_RE.fullmatch(value):
        return True
    return not _is_prose(value) and (len(value) <= 2 or re.search(r"[\d\\^_{}()=<>+\-*/|]", value) is not None)


def extract_from(text: str) -> str | None:
    """The explicit-pattern cascade on one piece of text: the LAST stated of \\boxed{}, "Answer:",
    "Answer <math>" and "the answer is" (an early boxed step does not beat a later final answer),
    preferring one that states a value over one that is prose ("the answer is correct")."""
    found = _explicit_candidates(text)
    if not found:
        return None
    values = [c for c in found if _states_value(c[1])]
    return max(values or found, key=lambda c: c[0])[1]


# A unit after a number: at most three words, none of them a connective or verb ("25 dollars",
# "25 square units"; not "25 or 26", "25 is wrong").
# A multiplier ("10 thousand", "3 dozen") changes the quantity: no unit.
MULTIPLIERS = r"(?:hundreds?|thousands?|millions?|billions?|trillions?|dozens?)\b"
UNIT_WORDS = (r"(?:\s+(?!(?:or|and|not|no|but|is|are|was|if|plus|minus|times|to|over|divided|by)\b|"
              + MULTIPLIERS + r")"
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


def _collapse_displays(text: str) -> str:
    """Display blocks (\\[ ... \\], $$ ... $$) on one line each, so a line reads as a whole."""
    return re.sub(r"\\\[(.{0,1000}?)\\\]|\$\$(.{0,1000}?)\$\$",
                  lambda m: "$" + " ".join((m.group(1) or m.group(2) or "").split()) + "$", text, flags=re.DOTALL)


def _bare_answer(section: str) -> str | None:
    """The answer section's own first line when it states a value without a pattern ("4" or
    "4 + 0 = 4" -> its right-hand side); else the value its last line with a value ends by stating
    ("... so the total is 10.", "8 + 2 = 10."), as lm-eval / lighteval read a plain response.
    s1's judge read the whole answer section, so a stated value counts; this applies ONLY inside an
    answer section (or a plain response), never to thinking text, and a value only mentioned ("I am
    not sure about 12") or hedged ("not 10") is not stated."""
    first = _leading_block(_before_special_token(section))
    if first is None:
        return None
    if len(first) <= 64:
        # A value, not prose ("I give up" is no answer); a number with a short unit ("25 dollars") is a value.
        value = _as_value(first)
        if value is not None:
            return value
    lines = [x for x in _collapse_displays(_before_special_token(section)).split("\n") if re.search(r"\d", x)]
    return _line_value(lines[-1]) if lines else None


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
# "Answer: B", "the answer is for sure D", "Final answer - B", 'Answer: "C"': up to two adverbs
# ("for sure", "clearly") but never a negation or hedge between the anchor and the letter.
_ANSWER_LEAD = (r"(?i:answer(?:\s+is)?|(?:option|choice)\s+is)(?:\s+(?!(?i:not|either|between|neither|maybe|perhaps)\b)[a-z]+){0,2}?"
                r"[\s*:：\-–—\"'“”]*\(?")
_EXPLICIT_CHOICE = [
    # \boxed{B}, \boxed{(B)}, \boxed{\text{B}}, \boxed{\textbf{(B)}}
    re.compile(r"\\(?:boxed|fbox)\s*\{\s*(?:\\text(?:bf)?\{)?\s*\(?" + _LETTER + r"\)?\s*\}?\s*\}"),
    # Answer: B / Answer: (B) / **Answer:** B / the answer is B. An upper-case letter may be followed
    # by more text ("Answer: B. 42 nm"); a lower-case one only by punctuation or the line end, so
    # that "Answer: a detailed derivation" is not read as choice A.
    re.compile(_ANSWER_LEAD + r"([A-D])\)?(?![A-Za-z0-9])"),
    re.compile(_ANSWER_LEAD + r"([a-d])\)?(?=[ \t\"'”]*(?:$|[.,;:!)\]*]))", re.MULTILINE),
    # "B is correct", "(C) is the right answer"
    re.compile(r"(?<![A-Za-z0-9_])\(?([A-D])\)?\s+is\s+(?:the\s+)?(?i:correct|right|best|answer)\b"),
    # "I think it's B", "it must be C": only a letter that ends the sentence
    re.compile(r"\b(?i:it's|it is|must be|should be)\s+\(?([A-D])\)?(?=[ \t*]*(?:$|[.!;,]))", re.MULTILINE),
]
# A bare upper-case (B) not glued to a word ("f(C)" is a function): only when no explicit answer
# exists; a lower-case "(a)" is a step or part label, never an option.
_BARE_CHOICE = re.compile(r"(?<![A-Za-z0-9_])\(([A-D])\)")
# The answer section opening with the letter alone: "D", "**C**", "(D)", "D. <option text>", "B) ..."
_LEADING_CHOICE = re.compile(r"[\s*\"'“]*(?i:(?:option|choice)\s+)?\(?([A-D])\)?[\s*\"'”]*(?:[.:)][ \t].*)?[.:)]?[\s*]*", re.DOTALL)
# A letter stated with a rival or a negation is no answer: "A or B", "not D", "between B and C".
_HEDGE_AFTER = re.compile(r"\)?[\s*\"'”]*(?:or|and|/|,)\s*\(?([A-D])\b")
_HEDGE_BEFORE = re.compile(r"(?i:\b(?:not|between|either|or|neither|nor|than|and)|n't)[\s*\"'“(]*$")


# "Option A is wrong", "(B) cannot be right": a letter ruled out, not chosen
_RULED_OUT = re.compile(r"\)?[\s*]*(?i:(?:is|are)\s+(?:wrong|incorrect|not|false|ruled out|eliminated)|can't|cannot)\b")


def _hedged(text: str, m: re.Match) -> bool:
    return bool(_HEDGE_AFTER.match(text, m.end(1)) or _RULED_OUT.match(text, m.end(1)) or _HEDGE_BEFORE.search(text[max(0, m.start(1) - 24):m.start(1)]))


def _choice_matches(patterns: list[re.Pattern], text: str) -> list[tuple[int, str, bool]]:
    """(position, letter, hedged) of every match, in text order."""
    out = [(m.start(1), m.group(1).upper(), _hedged(text, m)) for pat in patterns for m in pat.finditer(text)]
    return sorted(out)


def _last_of(patterns: list[re.Pattern], text: str) -> str | None:
    found = _choice_matches(patterns, text)
    if not found:
        return None
    _, letter, hedged = found[-1]
    return None if hedged else letter


def _choice_text(response: str, delimiter: str) -> tuple[str | None, str]:
    section = answer_section(response, delimiter)
    return section, (_before_special_token(section) if section is not None else response)


def extract_choice(response: str, delimiter: str = DEFAULT_DELIMITER) -> str | None:
    """The last explicitly stated letter A-D, else (answer section only) the section opening with
    a lone letter ("D", "**C**", "D. <option>"), else the last bare "(X)", else None. A letter
    stated with a rival or a negation ("A or B", "not D") is None. Never a default letter."""
    section, text = _choice_text(response, delimiter)
    if _choice_matches(_EXPLICIT_CHOICE, text) or section is None:  # thinking text: explicit answers only
        return _last_of(_EXPLICIT_CHOICE, text)
    lead = _LEADING_CHOICE.fullmatch(text.strip().split("\n", 1)[0])
    others = {letter for _, letter, _ in _choice_matches([_BARE_CHOICE], text)}
    if lead is not None and others <= {lead.group(1)}:  # "(A) is wrong, (B) is right" is no lead
        return lead.group(1)
    return _last_of([_BARE_CHOICE], text)


def choice_candidates(response: str, delimiter: str = DEFAULT_DELIMITER) -> list[str]:
    """The distinct letters the response states as its answer (explicitly, or bare "(X)" in the
    answer section), in order: more than one means the grader had to choose, or found a hedge."""
    section, text = _choice_text(response, delimiter)
    pats = _EXPLICIT_CHOICE + ([_BARE_CHOICE] if section is not None else [])
    letters: list[str] = []
    for pat in pats:
        for m in pat.finditer(text):
            rival = _HEDGE_AFTER.match(text, m.end(1))  # "A or B" names B as well
            letters += [(m.start(1), m.group(1).upper())] + ([(rival.start(1), rival.group(1))] if rival else [])
    return list(dict.fromkeys(letter for _, letter in sorted(letters)))
