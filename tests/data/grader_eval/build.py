"""Rebuild cases.jsonl from the public sources named in PROVENANCE.md (not run by the tests).

    python tests/data/grader_eval/build.py MIRROR_DIR > tests/data/grader_eval/cases.raw.jsonl

MIRROR_DIR holds bare clones named owner+name/repo (git show reads the pinned commits). Labels are
the sources' own; careful-reader relabels are applied afterwards from relabel.json (see PROVENANCE.md).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

SOURCES = {
    "math-verify": ("huggingface+Math-Verify", "5d148cfaaf99214c2e4ffb4bc497ab042c592a7a", "Apache-2.0",
                    ["tests/test_all.py", "tests/test_numina_cases.py", "tests/test_open_thoughts.py",
                     "tests/test_yujianll.py", "tests/test_boxed.py"]),
    "lighteval": ("huggingface+lighteval", "3fd15266bc8448b797e61462d293aa3fd40b3580", "MIT",
                  ["tests/unit/metrics/test_extractive_match.py"]),
}
QWEN = ("QwenLM+Qwen2.5-Math", "a45202bd16f1ec06f433442dc1152d0074773465", "MIT (evaluation/LICENSE)",
        "evaluation/data/eval_rm_maj_example/math_cot_100.jsonl")
LIGHTEVAL_GPQA = "tests/unit/metrics/test_cases/gpqa_instruct_metric.json"


# Careful-reader relabels: (source, response) -> (label, why). Only where the source's label tests
# one of its own extraction rules rather than whether the response is right.
RELABEL = {
    ("math-verify", "Answer $ \n 9 \n $"): (True, "states 9; the source's False tests its one-line rule for inline math"),
    ("math-verify", "Answer \\( \n 9 \n \\)"): (True, "states 9; the source's False tests its one-line rule for inline math"),
    ("lighteval", "Answer $ \n 9 \n $"): (True, "states 9; the source's False tests its one-line rule for inline math"),
    ("lighteval", "Answer \\( \n 9 \n \\)"): (True, "states 9; the source's False tests its one-line rule for inline math"),
    ("lighteval", "Jupiter is the largest planet in our solar system. So the answer is c.\n\nAnswer: c"):
        (True, "'Answer: c' names option C; the source's False tests case-sensitive letters"),
}


def show(mirror: str, repo: str, commit: str, path: str) -> str:
    return subprocess.run(["git", "-C", f"{mirror}/{repo}/repo", "show", f"{commit}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def _call_kwargs(fn: ast.FunctionDef) -> dict:
    """Keyword arguments of the test's compare_strings call (match_types, precision, ...)."""
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "compare_strings":
            out = {}
            for kw in node.keywords:
                try:
                    out[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    out[kw.arg] = "<param>"
            return out
    return {}


def parametrized(src: str):
    """(test name, kwargs of its compare_strings call, one dict per case) of each parametrized test."""
    for fn in ast.walk(ast.parse(src)):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for dec in fn.decorator_list:
            if not (isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize"):
                continue
            names = [n.strip() for n in ast.literal_eval(dec.args[0]).split(",")]
            for elt in dec.args[1].elts:
                try:
                    vals = ast.literal_eval(elt)
                except ValueError:  # uses a name (Language.X) or an f-string: names kept, others skipped
                    try:
                        vals = tuple(ast.literal_eval(e) if not isinstance(e, ast.Attribute) else e.attr
                                     for e in elt.elts)
                    except ValueError:
                        continue
                yield fn.name, _call_kwargs(fn), dict(zip(names, vals))


def main(mirror: str) -> None:
    rows = []
    for source, (repo, commit, licence, paths) in SOURCES.items():
        for path in paths:
            for test, kwargs, case in parametrized(show(mirror, repo, commit, path)):
                if not {"gold", "pred", "expected"} <= set(case):
                    continue
                # Graders configured away from defaults (other precision, set-relation switch) or
                # other languages test options this harness does not have.
                if "precision" in case or "allow_set_relation_comp" in case or kwargs.get("precision") not in (None, 6):
                    continue
                if case.get("language", "ENGLISH") != "ENGLISH":
                    continue
                kind = "choice" if kwargs.get("match_types") == ["NativeLetters"] else "math"
                if kind == "choice":  # lighteval's golds there are option lines ("(D) Alina"): their letter
                    case["gold"] = re.search(r"(?:^|\n)\(?([A-D])\)?(?:\s|$)", case["gold"]).group(1)
                rows.append({"source": source, "licence": licence, "repo": repo.replace("+", "/"), "commit": commit,
                             "path": f"{path}::{test}", "kind": kind, "gold": str(case["gold"]),
                             "response": str(case["pred"]), "expected": bool(case["expected"])})
    repo, commit, licence, path = SOURCES["lighteval"][0], SOURCES["lighteval"][1], "MIT", LIGHTEVAL_GPQA
    for tc in json.loads(show(mirror, repo, commit, path))["test_cases"]:
        gold = "ABCD"[tc["doc"]["gold_index"]]
        for text in tc["model_response"]["text"]:
            rows.append({"source": "lighteval", "licence": licence, "repo": repo.replace("+", "/"), "commit": commit,
                         "path": f"{path}::{tc['name']}", "kind": "choice", "gold": gold, "response": text,
                         "expected": tc["expected_output"]["extractive_match"] >= 0.5})
    # Qwen2.5-Math: real model responses graded by Qwen's grader. Per problem the first response,
    # and the first one whose score differs from it (modest size, both labels represented).
    repo, commit, licence, path = QWEN
    for line in show(mirror, repo, commit, path).splitlines():
        d = json.loads(line)
        picks = [0] + [i for i, s in enumerate(d["score"]) if s != d["score"][0]][:1]
        for i in picks:
            rows.append({"source": "qwen2.5-math", "licence": licence, "repo": repo.replace("+", "/"), "commit": commit,
                         "path": f"{path}::idx={d['idx']}:sample={i}", "kind": "math", "gold": str(d["gt"]),
                         "response": d["code"][i], "expected": bool(d["score"][i])})
    seen = set()
    for r in rows:
        key = (r["source"], r["kind"], r["gold"], r["response"])
        if key in seen:
            continue
        seen.add(key)
        relabel = RELABEL.get((r["source"], r["response"]))
        if relabel is not None:
            r["source_label"], r["expected"], r["label_note"] = r["expected"], relabel[0], "careful reader: " + relabel[1]
        print(json.dumps(r, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1])
