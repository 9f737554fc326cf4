"""Where the sampler forced text into a response, and whether a forced "Wait" changed the answer.

Runs since the sampler records them carry `forced` character spans ([start, end, "wait"|"close"]);
an older row's spans are inferred from its text, and only where that is unambiguous: the close is the
run's close string, and the Waits are the forced ones only when the thinking holds exactly `num_waits`
copies of the Wait string (a model that writes "Wait" itself makes the forced ones unknowable).

"A forced Wait changed the answer": s1 replaces the model's end of thinking by "Wait", so the answer
the model would have given there was never generated. What the response does hold is the answer its
thinking stated before the first forced Wait (the grader's extraction over that prefix: a \\boxed{},
"Answer:", "the answer is"); that answer is compared with the final extracted one and graded against
the gold with the same grader.
"""

from __future__ import annotations


def spans(row: dict, delims: dict) -> tuple[list[list], str]:
    """(forced spans, "recorded" | "inferred" | "unknown") of a stored row."""
    text = row.get("response") or ""
    wait, closes = delims.get("wait") or "Wait", _closes(delims)
    rec = row.get("forced")
    if isinstance(rec, list) and rec:
        ok = all(isinstance(s, list) and len(s) == 3 and 0 <= s[0] < s[1] <= len(text) for s in rec) and \
            all(text[a:b] == wait if k == "wait" else text[a:b] in closes for a, b, k in rec)
        if ok:
            return [list(s) for s in rec], "recorded"
    out: list[list] = []
    close_at = None
    for c in sorted(closes, key=len, reverse=True):
        i = text.find(c)
        if i >= 0 and (close_at is None or i < close_at):
            close_at, close = i, c
    if close_at is not None:
        out.append([close_at, close_at + len(close), "close"])
    thinking = text[:close_at] if close_at is not None else text
    n = int(row.get("num_waits") or 0)
    at = _find_all(thinking, wait)
    if n and len(at) != n:
        return sorted(out), "unknown"
    out += [[i, i + len(wait), "wait"] for i in at] if n else []
    return sorted(out), "inferred"


def _closes(delims: dict) -> set[str]:
    c = delims.get("final_answer_close") or ""
    out = {x for x in (c, c.lstrip("\n"), delims.get("answer_prefix") or "") if x}
    return out


def _find_all(text: str, needle: str) -> list[int]:
    out, i = [], text.find(needle)
    while needle and i >= 0:
        out.append(i)
        i = text.find(needle, i + len(needle))
    return out


def effects(benchmark: str, rows: list[dict], spans_of: list[list[list]], answer_delimiter: str) -> list[dict | None]:
    """Per row: None without a forced Wait, else {"before": [answer stated before each forced Wait],
    "before_correct": bool | None, "effect": "fixed" | "broke" | "changed" | "same" | "none-before"}."""
    from harness.evaluation.grading import extract, grade_many

    out: list[dict | None] = [None] * len(rows)
    todo = []
    for i, (row, sp) in enumerate(zip(rows, spans_of)):
        waits = [a for a, _, k in sp if k == "wait"]
        if not waits or not row.get("response"):
            continue
        text = row["response"]
        before = [_safe(lambda t: extract(benchmark, t, answer_delimiter=answer_delimiter), text[:a]) for a in waits]
        out[i] = {"before": before}
        if before[0] is not None and row.get("gold") not in (None, ""):
            todo.append(i)
    try:
        verdicts = grade_many(benchmark, [(f"Answer: {out[i]['before'][0]}", str(rows[i]["gold"])) for i in todo],
                              answer_delimiter=answer_delimiter, workers=1)
    except Exception:       # an unknown benchmark or a gold its grader refuses: no verdict, only the answers
        verdicts = [None] * len(todo)
    for i, v in zip(todo, verdicts):
        out[i]["before_correct"] = None if v is None else bool(v.correct)
    for i, e in enumerate(out):
        if e is None:
            continue
        first, final, ok = e["before"][0], rows[i].get("extracted"), e.get("before_correct")
        if first is None:
            e["effect"] = "none-before"
        elif ok is not None and ok != bool(rows[i].get("correct")):
            e["effect"] = "fixed" if rows[i].get("correct") else "broke"
        else:
            e["effect"] = "same" if _norm(first) == _norm(final) else "changed"
    return out


def _safe(fn, *args):
    try:
        return fn(*args)
    except Exception:
        return None


def _norm(s) -> str:
    return "" if s is None else "".join(str(s).split()).lower()
