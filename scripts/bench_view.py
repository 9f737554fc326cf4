"""Benchmark of `iwsft view` at the paper's size (a measurement, not a test): synthetic runs of 4
checkpoints on AIME24 (30), MATH500 (500) and GPQA Diamond (198 problems), responses of ~20k tokens
with forced Waits, written as run folders; the page is built and opened in headless Chromium.

Prints and saves (--save, JSON): the build time, the page size, the open time (navigation to the first
rendered list) and the time until the whole file is parsed, the time of each filter, of a text search
over every response, and of opening one response. Target (issue 28): open < 2 s.

    python scripts/bench_view.py [--tokens 20000] [--scale 1.0] [--save reports/bench/view.json]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BENCHES = {"aime24": 30, "math500": 500, "gpqa_diamond": 198}
CHECKPOINTS = ("base", "s1.1-sft", "iw-sft", "iw-sft-step")
CLOSE, NAT = "\n<|im_start|>answer\nFinal Answer:", "<|im_start|>answer"
WORDS = ("so the sum is let us check again factor both sides we get therefore x equals the answer is "
         "consider the case where n is odd then substitute back into the equation which gives a contradiction "
         "hence modulo prime divides triangle area radius angle probability expected value").split()


def response(rng: random.Random, tokens: int, waits: int, answer: str) -> tuple[str, list]:
    """~`tokens` tokens (about 0.75 word each) of thinking in `waits` + 1 parts, forced Waits between, the close, an answer."""
    parts, forced, text = waits + 1, [], ""
    for k in range(parts):
        words = rng.choices(WORDS, k=int(tokens * 0.75 / parts))
        text += " ".join(words) + (f" the answer is {rng.randint(0, 999)}." if k < parts - 1 else "")
        if k < parts - 1:
            forced.append([len(text), len(text) + 4, "wait"])
            text += "Wait"
    forced.append([len(text), len(text) + len(NAT), "close"])
    return text + NAT + f" \\boxed{{{answer}}}", forced


def write_runs(root: Path, tokens: int, scale: float, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    dirs = []
    for ci, ckpt in enumerate(CHECKPOINTS):
        for bench, n in BENCHES.items():
            d = root / ckpt / bench / f"{ci:012d}"
            d.mkdir(parents=True)
            rows = []
            for i in range(max(1, int(n * scale))):
                gold = "B" if bench == "gpqa_diamond" else str(i % 1000)
                ok = rng.random() < 0.4 + 0.1 * ci
                ans = gold if ok else ("C" if bench == "gpqa_diamond" else str(i % 1000 + 1))
                waits = rng.choice((0, 1, 2)) if ci else 0
                text, forced = response(rng, rng.randint(tokens // 2, tokens), waits, ans)
                rows.append({"problem_id": f"{bench}-{i}", "sample_index": 0, "response": text, "thinking_tokens": len(text) // 4,
                             "answer_tokens": 5, "total_tokens": len(text) // 4 + 5, "extracted": ans, "correct": ok, "gold": gold,
                             "finish_reason": "stop", "hit_cap": rng.random() < 0.2, "num_waits": waits, "thinking_cap": tokens,
                             "forced": forced})
            (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (d / "settings.json").write_text(json.dumps({"benchmark": bench, "wait": 2, "thinking_budget": tokens,
                                                         "prompt": {"delimiters": {"name": "s1", "answer_prefix": NAT, "final_answer_close": CLOSE, "wait": "Wait"}}}))
            (d / "metrics.json").write_text(json.dumps({"benchmark": bench, "n": len(rows), "weights_id": f"w{ci}",
                                                        "accuracy": sum(r["correct"] for r in rows) / len(rows)}))
            dirs.append(d)
    return dirs


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium") or shutil.which("google-chrome")
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


TIMED = """const t0 = performance.now(); %s; return performance.now() - t0;"""


def measure(page: Path, repeats: int = 3) -> dict:
    d = browser()
    try:
        opens = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            d.get(page.resolve().as_uri())          # returns at the load event: the whole file parsed
            loaded = time.perf_counter() - t0
            ready = d.execute_script("return window.__viewReady")   # first list rendered, ms after navigation start
            opens.append({"first_render_s": ready / 1000, "load_event_s": loaded})
        d.find_element("css selector", "nav button[data-tab=samples]").click()
        out = {"open": opens}
        steps = {"verdict=wrong": "$('f-verdict').value='wrong'; applyFilters()",
                 "benchmark=math500": "$('f-bench').value='math500'; applyFilters()",
                 "Waits that changed the answer": "$('q-changed').click()",
                 "sort by thinking tokens": "$('f-sort').value='think-desc'; applyFilters()",
                 "clear": "for (const id of ['f-bench','f-verdict','f-effect','f-sort']) $(id).value=''; applyFilters()",
                 "open one response (not searched yet)": "showResponse($('resp'), ROWS[ROWS.length - 1])",
                 "search in every response (first: parses and lowers every text)": "$('f-qtext').checked=true; $('f-q').value='contradiction'; applyFilters()",
                 "search in every response (again)": "$('f-q').value='the answer is 12'; applyFilters()"}
        # the page's top-level names (ROWS, applyFilters, $) are global: each step runs as the page's own code would
        out["steps_ms"] = {}
        for name, js in steps.items():
            out["steps_ms"][name] = round(d.execute_script(TIMED % js), 1)
        out["shown"] = int(d.find_element("id", "count").text)
        return out
    finally:
        d.quit()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=20000, help="longest response (thinking) in tokens; each is 1/2 to 1 of it")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of each benchmark's problems (1 = the paper's)")
    ap.add_argument("--save", default=None, help="write the numbers to this JSON file")
    ap.add_argument("--keep", default=None, help="write the runs and the page here (default: a temporary folder)")
    args = ap.parse_args()
    from harness.view.page import write_page

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="iwsft-view-bench-"))
    try:
        t = time.perf_counter()
        dirs = write_runs(root / "evals", args.tokens, args.scale)
        synth = time.perf_counter() - t
        t = time.perf_counter()
        page = write_page([root / "evals"], root / "view.html")
        build = time.perf_counter() - t
        res = {"checkpoints": len(CHECKPOINTS), "benchmarks": BENCHES, "scale": args.scale, "max_tokens": args.tokens,
               "runs": len(dirs), "responses": sum(len((d / "samples.jsonl").read_text().splitlines()) for d in dirs),
               "synthetic_data_s": round(synth, 1), "build_s": round(build, 1), "page_mb": round(page.stat().st_size / 1e6, 1),
               **measure(page)}
        print(json.dumps(res, indent=1))
        if args.save:
            Path(args.save).parent.mkdir(parents=True, exist_ok=True)
            Path(args.save).write_text(json.dumps(res, indent=1) + "\n")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
