"""Deterministic answer equivalence: integer, multiple-choice and math (math-verify plus guards).

Math grading (MATH500) is math-verify 0.9 with the guards below. Each guard answers a false
positive or a miss observed with math-verify 0.9.0 itself (see tests/test_grading.py, one named case
per guard):

1. Bare strings. math-verify only looks for LaTeX inside $...$ / \\boxed; a bare "1-\\frac{1}{e}"
   is read by its plain-expression fallback as "1", so 1-1/e == 1+1/e, "5!" == "5", and text golds
   ("\\text{(C)}", "Monday") parse to nothing. -> Both sides are wrapped in $...$ (`_wrap`).
2. Collapse to a prefix. With its default extraction_mode="any_match", when the whole LaTeX fails
   to parse math-verify retries shorter matches, so "1 - \\frac{1}{\\mathrm{e}}" and
   "1 + \\frac{1}{\\mathrm{e}}" both become 1 (same for \\operatorname, unknown macros, "2+\\frac{3}").
   -> LaTeX extraction only, extraction_mode="first_match": the whole answer parses or nothing does.
   Single letters in \\mathrm{}/\\mathit{}/\\mathbf{} are unwrapped first, so that the correct
   "1-\\frac{1}{\\mathrm{e}}" still parses (and matches "1-\\frac{1}{e}").
3. String fallbacks. When parsing fails math-verify compares its *normalised* strings, and its unit
   stripping deletes trailing \\text{..}/\\mathbf{..} groups even when they hold digits, so
   "3\\times\\mathbf{4}" == "3\\times\\mathbf{5}" ('3\\times' both). -> math-verify is trusted only
   when both sides parsed to a SymPy object; otherwise our own normalised strings must match.
4. Deleted content that still parses ("3\\text{5}" == "3\\text{7}", both 3) and any other silent
   collapse. -> An independent SymPy numeric evaluation of our own normalisation (`numeric_value`);
   when math-verify says equal but both sides evaluate to numbers that differ, the answer is wrong.
5. "...=0" equations. Gold "0" matches "2x+3=0" (math-verify compares the right-hand side).
   -> A relation on one side only is accepted only as an assignment ("x = 5" for gold 5: its
   left-hand side is a lone symbol or f(...)).
6. Boolean collapse. "3 \\equiv 5" and "3 \\equiv 7" both evaluate to False, so they "match".
   -> A side that parses to a SymPy boolean is never trusted.
7. Text answers. Words parse as products of one-letter symbols, so anagrams match ("even" ==
   "neve"). -> When either side is a text answer (letters only, with a \\text{} wrapper or 3+
   letters), compare case-insensitive letter strings: "\\text{(C)}" == "C", "Monday" != "Tuesday".

8. Factorial quotients. math-verify evaluates them inexactly: "\\frac{30!}{28!}" == "\\frac{29!}{27!}"
   (870 vs 812) and "\\frac{1000!}{998!}" == "\\frac{999!}{997!}". Guard 4 catches small arguments;
   for large ones (SymPy is not asked factorials of >= 1000) `numeric_value` rewrites a!/b! as the
   exact product (b+1)...a first.

Not guarded (documented limits): math-verify accepts "10\\%" as both 10 and 0.1; it compares numbers
to 6 significant decimals ("0.3333333" == 1/3) and with 15-digit precision, so two integers that
differ only beyond that inside a symbolic product can match ("10^{20}x" == "(10^{20}+1)x").
"5!" == "5" only bare (guard 1).
"""

from __future__ import annotations

import logging
import math
import re

from harness.evaluation.grading.extract import MULTIPLIERS, UNIT_WORDS, final_boxed_span, stated_result

# ---- integers (AIME, arithmetic) ----------------------------------------------------------------

_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|textrm|textnormal|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")


def _strip_math_delims(s: str) -> str:
    s = s.strip()
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(a) + len(b) and s.startswith(a) and s.endswith(b):
            s = s[len(a):len(s) - len(b)].strip()
    return s


def _unbox(s: str) -> str:
    """The final boxed answer (several boxes of one answer joined), or s when it has no box."""
    span = final_boxed_span(s)
    return span[1] if span else s


_UNIT_TAIL_RE = re.compile(  # a trailing unit: \text{ ways}, \mathrm{cm}^2, "dollars", "square units"
    r"(?:\s*\\(?:text|textrm|mathrm|mbox)\s*\{\s*(?!" + MULTIPLIERS + r")[A-Za-z][A-Za-z\s.]*\}|" + UNIT_WORDS
    + r")(?:\^\{?\d\}?)?\s*$")
# An integer, with "," or a space as thousands separator, and an optional ".0".
_PLAIN_INT_RE = re.compile(r"([+-]?)\s*(\d{1,3}(?:[ ,]\d{3})+|\d+)(?:\.0*)?")


def _as_plain_int(s: str) -> int | None:
    m = _PLAIN_INT_RE.fullmatch(s.strip().rstrip(".").strip())
    if not m:
        return None
    try:
        return int(m.group(1) + re.sub(r"[ ,]", "", m.group(2)))
    except ValueError:  # more digits than int() accepts
        return None


def to_int(s: str | None) -> int | None:
    """Parse an integer answer: "025" -> 25, "25.0" -> 25, "$1,000$." -> 1000, "\\text{25}" -> 25,
    a unit ("25 \\text{ ways}", "25 dollars") -> 25, the right of a final "=" ("x = 5",
    "m + n = 37", "3 + 4 = 7") -> its value. Anything else -> None: fractions, words, 2.5, prose
    ("x = 3 and y = 5", "The total is 7"), an equation "2x + 3 = 0"."""
    if s is None:
        return None
    s = _strip_math_delims(_unbox(str(s)))
    s = s.replace("\\$", "").replace("$", "").replace("**", "")
    s = re.sub(r"\\[!,;: ]|\\q?quad|~", " ", s)
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)
    s = re.sub(r"\s+", " ", s)  # one space per run: the unit pattern below then cannot backtrack quadratically
    s = s.replace("{,}", ",").strip().rstrip(".").strip()
    if "=" in s:
        result = stated_result(s)
        return None if result is None else to_int(result)
    s = _UNIT_TAIL_RE.sub("", s).strip() if re.search(r"\d", s) else s
    s = re.sub(r"\s*\\?%$", "", s)  # "20\%" states 20 (a percent sign never scales an integer answer)
    s = _TEXT_WRAP_RE.sub(r"\1", s)
    return _as_plain_int(s)


def integer_equal(extracted: str | None, gold: str) -> bool:
    a, b = to_int(extracted), to_int(gold)
    return a is not None and b is not None and a == b


# ---- multiple choice ---------------------------------------------------------------------------

def choice_letter(s: str | None) -> str | None:
    """"B", "(b)", "\\text{B}" -> "B"; anything else None."""
    if s is None:
        return None
    t = _TEXT_WRAP_RE.sub(r"\1", _strip_math_delims(str(s))).strip().strip("().").strip()
    return t.upper() if re.fullmatch(r"[A-Da-d]", t) else None


def choice_equal(extracted: str | None, gold: str) -> bool:
    a, b = choice_letter(extracted), choice_letter(gold)
    return a is not None and a == b


# ---- math: our own normalisation (s1 / Hendrycks MATH style) -------------------------------------

_UNIT_RE = re.compile(r"\\(?:text|mbox|textrm|mathrm)\s*\{\s*(?!" + MULTIPLIERS
                      + r")[A-Za-z][A-Za-z\s.]*\}(?:\^\{?\d\}?)?\s*$")


def _fix_fracs(s: str) -> str:
    # \frac12 -> \frac{1}{2}; \frac1{2} -> \frac{1}{2}; \frac{1}2 -> \frac{1}{2}
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\d)", r"\\frac\1{\2}", s)
    return s


def normalize_answer(s: str) -> str:
    """Canonical string for the plain-string comparison: no $, \\left/\\right, spacing macros,
    \\dfrac/\\tfrac, degrees, percent, trailing text units, \\text{} wrappers, spaces, trailing
    period, thousands commas, a leading single-variable assignment ("x=")."""
    s = _strip_math_delims(_unbox(str(s)))
    s = s.replace("\n", " ").replace("\\$", "").replace("$", "")
    s = re.sub(r"\\(?:left|right)\s*\.", "", s)
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big|bigg|Bigg)\b", "", s)
    s = re.sub(r"\\[!,;: ]|\\q?quad\b|~", " ", s)
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.strip().rstrip(".").strip()
    for _ in range(3):  # "5\text{ cm}^2", "9 \text{ units}"
        t = _UNIT_RE.sub("", s).strip()
        if not t or t == s:
            break
        s = t
    s = _TEXT_WRAP_RE.sub(r"\1", s)
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    m = re.fullmatch(r"[A-Za-z]\w?=([^=]+)", s)
    if m:
        s = m.group(1)
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = _fix_fracs(s)
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if m:
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    if re.fullmatch(r"-?\d*\.\d+", s):
        s = s.rstrip("0").rstrip(".") if "." in s else s
        s = re.sub(r"^(-?)\.", r"\g<1>0.", s)
    if re.fullmatch(r"-?0+\d+", s):  # "025" -> "25"
        s = re.sub(r"^(-?)0+(?=\d)", r"\1", s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return s


def _text_letters(s: str) -> str | None:
    """Lower-case letters of a text-like answer, or None if it holds anything but text."""
    t = _strip_math_delims(_unbox(str(s)))
    t = re.sub(r"\\(?:text|textbf|textit|textrm|textnormal|mbox|mathrm|mathbf)\s*\{([^{}]*)\}", r"\1", t)
    t = re.sub(r"[\s().,;:!'\"*\-]", "", t).strip()
    return t.lower() if t and re.fullmatch(r"[A-Za-z]+", t) else None


def is_text_answer(s: str) -> bool:
    """A word/label answer: "\\text{(C)}", "\\text{Monday}", "even" (3+ letters); not "x", "\\pi",
    "\\mathrm{e}" or "5\\text{ cm}"."""
    letters = _text_letters(s)
    if letters is None:
        return False
    wrapped = re.search(r"\\(?:text|textbf|textit|textrm|textnormal|mbox)\s*\{", s) is not None
    return wrapped or len(letters) >= 3 or bool(re.fullmatch(r"\s*\(\s*[A-Za-z]\s*\)\s*", s))


# ---- math: independent numeric evaluation (guard 4) ----------------------------------------------

_NUM_ALLOWED = re.compile(r"[0-9.+\-*/^(){}\[\]!\\a-z ]*")


def _replace_group_cmd(s: str, cmd: str, nargs: int, fmt) -> str | None:
    """Replace \\cmd{a}{b}... (innermost first is not needed: we loop until none left)."""
    pat = "\\" + cmd
    guard = 0
    while pat in s:
        guard += 1
        if guard > 200:
            return None
        i = s.rfind(pat)  # the last occurrence has no unreplaced command inside its arguments
        j = i + len(pat)
        args = []
        for _ in range(nargs):
            while j < len(s) and s[j] == " ":
                j += 1
            if j >= len(s):
                return None
            if s[j] == "{":
                depth, k = 0, j
                while k < len(s):
                    if s[k] == "{":
                        depth += 1
                    elif s[k] == "}":
                        depth -= 1
                        if depth == 0:
                            break
                    k += 1
                if k >= len(s):
                    return None
                args.append(s[j + 1:k])
                j = k + 1
            else:
                args.append(s[j])
                j += 1
        s = s[:i] + fmt(*args) + s[j:]
    return s


_FACT_QUOTIENT_RE = re.compile(r"\\frac\{(\d+)!\}\{(\d+)!\}|(?<![\d!)}])(\d+)!/(\d+)!(?![\d!^])")


def _expand_factorial_quotients(t: str) -> str | None:
    """Guard 8: a!/b! as the exact product (b+1)...a (or its reciprocal). math-verify calls
    1000!/998! equal to 999!/997!, and SymPy would not be asked a factorial of >= 1000; the
    product of a - b terms is exact and cheap. None when the product itself would be huge."""
    def product(m: re.Match) -> str:
        a, b = (int(x) for x in (m.group(1, 2) if m.group(1) else m.group(3, 4)))
        lo, hi = min(a, b), max(a, b)
        if hi - lo > 2000:
            raise OverflowError
        value = math.prod(range(lo + 1, hi + 1))
        return f"({value})" if a >= b else f"(1/({value}))"
    try:
        return _FACT_QUOTIENT_RE.sub(product, t)
    except OverflowError:
        return None


def numeric_value(s: str) -> complex | None:
    """Evaluate a closed-form numeric answer with SymPy, independently of math-verify's parser.
    Returns None for anything that is not a plain number expression (variables, sets, tuples,
    intervals, equations, percentages, unknown macros)."""
    raw = _strip_math_delims(_unbox(str(s)))
    if "%" in raw or "=" in raw or "," in raw.replace("{,}", ""):
        return None
    t = _expand_factorial_quotients(normalize_answer(raw))
    if t is None:
        return None
    if re.search(r"\d\s*\\frac", t):  # "1\frac12": a mixed number to math-verify, a product to SymPy
        return None
    t = re.sub(r"\\(?:mathbf|mathrm|text|textbf|mbox|operatorname)\s*\{([^{}]*)\}", r"(\1)", t)
    t = t.replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/").replace("\\pi", " pi ")
    t = _replace_group_cmd(t, "frac", 2, lambda a, b: f"(({a})/({b}))")
    if t is None:
        return None
    t = re.sub(r"\\sqrt\s*\[([^\[\]]+)\]\s*\{", r"\\root{\1}{", t)
    t = _replace_group_cmd(t, "root", 2, lambda n, a: f"(({a})**(1/({n})))")
    t = None if t is None else _replace_group_cmd(t, "sqrt", 1, lambda a: f"sqrt({a})")
    if t is None or "\\" in t or not _NUM_ALLOWED.fullmatch(t):
        return None
    t = t.replace("{", "(").replace("}", ")").replace("[", "(").replace("]", ")").replace("^", "**")
    t = re.sub(r"(?<![\d.])0+(?=\d)", "", t)  # "025": SymPy's tokenizer reads leading zeros oddly
    if re.search(r"\*\*\s*\(?[^()]*\*\*|\*\*\s*\(?\s*\d{5,}", t):
        return None  # power towers / huge exponents: exact big-int work that no signal can interrupt
    words = set(re.findall(r"[a-z]+", t))
    if not words <= {"pi", "e", "sqrt"}:
        return None
    if len(t) > 200 or re.search(r"\d{4,}\s*!", t):
        return None  # long input or a factorial of >= 1000: not worth exact evaluation
    import sympy
    from sympy.parsing.sympy_parser import (implicit_multiplication_application, parse_expr,
                                            standard_transformations)
    try:
        expr = parse_expr(t, local_dict={"e": sympy.E, "pi": sympy.pi, "sqrt": sympy.sqrt},
                          transformations=standard_transformations + (implicit_multiplication_application,),
                          evaluate=False)
        if getattr(expr, "free_symbols", None):
            return None
        val = complex(sympy.N(expr, 30))
    except Exception:
        return None
    if val != val or abs(val) == float("inf"):
        return None
    return val


def _numbers_differ(a: complex, b: complex, rel: float = 1e-6) -> bool:
    return abs(a - b) > rel * max(1.0, abs(a), abs(b))


# ---- math: math-verify with guards ---------------------------------------------------------------

_MV_LOGGER_QUIET = False


def _quiet_math_verify() -> None:
    global _MV_LOGGER_QUIET
    if not _MV_LOGGER_QUIET:
        # "Timeout is disabled" warnings: we run without its signal timeouts on purpose (see pool.py).
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        _MV_LOGGER_QUIET = True


def _wrap(s: str) -> str:
    """Guard 1: math-verify ignores LaTeX outside $...$; an answer that already has its own
    delimiters is passed as is."""
    s = _unbox(str(s)).strip()
    # \mathrm{e} inside an expression defeats its parser ("\frac{1}{\mathrm{e}}" -> nothing).
    s = re.sub(r"\\math(?:rm|it|bf)\s*\{\s*([A-Za-z])\s*\}", r"\1", s)
    if "$" in s or "\\(" in s or "\\[" in s:
        return s
    return f"${s}$"


def mv_parse(s: str) -> list:
    """math-verify parse with guard 2 (LaTeX only, first_match) and no signal timeout."""
    _quiet_math_verify()
    from math_verify import LatexExtractionConfig, parse
    return parse(_wrap(s), extraction_config=[LatexExtractionConfig()], extraction_mode="first_match",
                 parsing_timeout=None)


def _sympy_obj(parsed: list):
    import sympy
    for x in parsed:
        if isinstance(x, (sympy.Basic, sympy.MatrixBase)):
            return x
    return None


def _is_non_assignment_relation(x) -> bool:
    """Guard 5: a relation whose left side is not a lone symbol / f(..): "2x+3=0" yes, "x=5" no."""
    import sympy
    from sympy.core.function import AppliedUndef
    if not isinstance(x, sympy.core.relational.Relational):
        return False
    return not isinstance(x.lhs, (sympy.Symbol, AppliedUndef))


def _is_boolean(x) -> bool:
    """Guard 6: a truth value, or a relation between constants ("3 \\equiv 5" -> Eq(3, 5))."""
    import sympy
    if isinstance(x, sympy.logic.boolalg.BooleanAtom):
        return True
    return isinstance(x, sympy.core.relational.Relational) and not x.free_symbols


# ---- math: forms a reader equates that math-verify does not (issue 25) ----------------------------

_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})\s*(?:([AaPp])\.?\s*[Mm]\.?)?")
_MIXED_RE = re.compile(r"([+-]?)(\d+)\s+(\d+)\s*/\s*(\d+)(?:\s+[A-Za-z]+){0,3}")  # "1 1/2 cups"
_TRIG_RE = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)\b")
_DEGREE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*\^\s*\{?\s*\\circ\s*\}?")
_RELATION_RE = re.compile(r"\\[lg]eq?\b|\\[lg]t\b|\\neq?\b|[<>]=?|!=|=")


_MULTIPLIER_RE = re.compile(r"\d\s*(?:\\(?:text|textrm|mathrm|mbox)\s*\{\s*)?" + MULTIPLIERS)
_SPANS_LIST_RE = re.compile(r"\s*\$[^$]+\$(?:\s*(?:,|;|\band\b|\bor\b)\s*\$[^$]+\$)+\s*\.?\s*")


def _join_spans(gold: str) -> str:
    """A gold written as several math spans ("$1$ and $2$ and $3$", "$21,16$ or $11$") as one list."""
    if not _SPANS_LIST_RE.fullmatch(gold):
        return gold
    return ", ".join(x.strip() for x in re.findall(r"\$([^$]+)\$", gold))


def _minutes_of_day(s: str) -> tuple[int, bool] | None:
    """"20:34" -> (1234, False), "08:34 P.M." -> (1234, True); None when s is not a clock time."""
    m = _TIME_RE.fullmatch(_strip_math_delims(_TEXT_WRAP_RE.sub(r"\1", s)).strip().rstrip("."))
    if m is None:
        return None
    h, mi, half = int(m.group(1)), int(m.group(2)), m.group(3)
    if mi > 59 or h > 23 or (half and not 1 <= h <= 12):
        return None
    if half:
        h = h % 12 + (12 if half in "Pp" else 0)
    return h * 60 + mi, bool(half)


def _rewrite_forms(s: str) -> str:
    """A mixed number "1 1/2" as math-verify's "1\\frac{1}{2}"; degrees inside a trigonometric
    function as radians ("\\sin(90^\\circ - x)" -> "\\sin(\\frac{90\\pi}{180} - x)")."""
    t = _strip_math_delims(s)
    m = _MIXED_RE.fullmatch(t.strip())
    if m:
        return f"{m.group(1)}{m.group(2)}\\frac{{{m.group(3)}}}{{{m.group(4)}}}"
    if _TRIG_RE.search(t):
        t = _DEGREE_RE.sub(r"\\frac{\1\\pi}{180}", t)
    return t


def _label_value(s: str) -> str | None:
    """The value of a labelled answer "(p,q)=(3,2)", "|AB|=1", "\\frac{NO}{BO}=\\frac{1}{3}",
    "V_1:V_2=11:21": the right side when the left is a name (no digit outside subscripts, no
    arithmetic) and the right holds no variable; else None."""
    t = _strip_math_delims(_unbox(str(s)))
    if t.count("=") != 1 or re.search(r"[<>!]=|\\[lg]eq?|\\neq?", t):
        return None
    lhs, rhs = (x.strip() for x in t.split("="))
    bare = re.sub(r"_\s*(?:\{[^{}]*\}|\w)", "", lhs)
    if not lhs or not rhs or re.search(r"\d|[+\-*^]|\\(?:cdot|times|div)", bare) or not re.search(r"[A-Za-z]", bare):
        return None
    if re.search(r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])", re.sub(r"\\[A-Za-z]+", " ", rhs)):
        return None  # "y = 2x + 1" is a line, not a labelled value
    return rhs


def _rel_canonical(r):
    """(kind, expression): a > b -> (">", a - b); a <= b -> (">=", b - a); a = b -> ("=", a - b)."""
    import sympy
    rel = sympy.core.relational
    if isinstance(r, rel.StrictGreaterThan):
        return ">", r.lhs - r.rhs
    if isinstance(r, rel.GreaterThan):
        return ">=", r.lhs - r.rhs
    if isinstance(r, rel.StrictLessThan):
        return ">", r.rhs - r.lhs
    if isinstance(r, rel.LessThan):
        return ">=", r.rhs - r.lhs
    if isinstance(r, rel.Unequality):
        return "!=", r.lhs - r.rhs
    if isinstance(r, rel.Equality):
        return "=", r.lhs - r.rhs
    return None


def _relations_equal(g, p) -> bool:
    """Two relations with variables that say the same thing: "5 \\geq x" and "x \\leq 5", "-x > -1"
    and "x < 1", "y = -x/2 + 3/4" and "2x + 4y - 3 = 0" (one a constant multiple of the other,
    positive for inequalities); "f(x) = x^2" and "y = x^2" (two assignments with equal right sides)."""
    import sympy
    from sympy.core.function import AppliedUndef
    cg, cp = _rel_canonical(g), _rel_canonical(p)
    if cg is None or cp is None or cg[0] != cp[0] or not (g.free_symbols and p.free_symbols):
        return False
    if cg[0] == "=" and all(isinstance(x.lhs, (sympy.Symbol, AppliedUndef)) for x in (g, p)):
        if sympy.simplify(g.rhs - p.rhs) == 0:
            return True
    if cp[1] == 0:
        return False
    ratio = sympy.simplify(cg[1] / cp[1])
    if ratio.free_symbols or not ratio.is_number or ratio == 0:
        return False
    return bool(ratio > 0) if cg[0] in (">", ">=") else True


def _relations_judge(pred: str, gold: str) -> bool | None:
    """True/False when both sides are relations with variables, None otherwise."""
    if not (_RELATION_RE.search(pred) and _RELATION_RE.search(gold)):
        return None
    try:
        g, p = _sympy_obj(mv_parse(gold)), _sympy_obj(mv_parse(pred))
    except Exception:
        return None
    rel = __import__("sympy").core.relational.Relational
    if not (isinstance(g, rel) and isinstance(p, rel)) or _is_boolean(g) or _is_boolean(p):
        return None
    return _relations_equal(g, p)


def math_equal(pred: str | None, gold: str) -> bool:
    """Is the extracted prediction equivalent to the MATH gold? Deterministic; may be slow on
    pathological input (call it under a timeout, see pool.py). The forms of issue 25 first: clock
    times, mixed numbers, degrees in trigonometric functions, a labelled value against the bare one,
    relations written another way; then math-verify with its guards."""
    if pred is None or not str(pred).strip():
        return False
    pred, gold = str(pred), _join_spans(str(gold))
    if bool(_MULTIPLIER_RE.search(pred)) != bool(_MULTIPLIER_RE.search(gold)):
        return False  # "10 thousand" is not 10 (math-verify drops the word as a unit)
    tp, tg = _minutes_of_day(_unbox(pred)), _minutes_of_day(_unbox(gold))
    if tp is not None and tg is not None and (tp[1] or tg[1]):  # "20:34" vs "08:34 P.M."
        return tp[0] == tg[0]
    if _core_math_equal(_rewrite_forms(_unbox(pred)), _rewrite_forms(_unbox(gold))):
        return True
    lp, lg = _label_value(pred), _label_value(gold)
    if (lp is None) != (lg is None) and _core_math_equal(lp or pred, lg or gold):
        return True  # "(p,q)=(3,2)" against "(3,2)", either way round
    try:
        return bool(_relations_judge(_unbox(pred), _unbox(gold)))
    except Exception:
        return False


def _core_math_equal(pred: str, gold: str) -> bool:
    npred, ngold = normalize_answer(pred), normalize_answer(gold)
    if npred == ngold and npred:
        return True
    if is_text_answer(gold) or is_text_answer(pred):  # guard 7
        a, b = _text_letters(pred), _text_letters(gold)
        return a is not None and a == b
    try:
        g_parsed, p_parsed = mv_parse(gold), mv_parse(pred)
        g, p = _sympy_obj(g_parsed), _sympy_obj(p_parsed)
        if g is None or p is None:  # guard 3: no SymPy object, only its normalised strings
            return False
        if _is_boolean(g) or _is_boolean(p):  # guard 6
            return False
        from math_verify import verify
        if not verify(g_parsed, p_parsed, timeout_seconds=None):
            return False
    except Exception:
        return False
    if _is_non_assignment_relation(g) != _is_non_assignment_relation(p):  # guard 5
        return False
    a, b = numeric_value(pred), numeric_value(gold)  # guard 4
    if a is not None and b is not None and _numbers_differ(a, b):
        return False
    return True


# ---- dispatch ------------------------------------------------------------------------------------

def judge(kind: str, extracted: str | None, gold: str) -> bool:
    """Top-level (picklable) entry used by the process pool."""
    if extracted is None:
        return False
    if kind == "integer":
        return integer_equal(extracted, gold)
    if kind == "choice":
        return choice_equal(extracted, gold)
    if kind == "math":
        return math_equal(extracted, gold)
    raise ValueError(f"unknown grading kind {kind!r}")
