"""`iwsft view`: the page opened in headless Chromium (selenium), its counts checked against samples.jsonl.

Browser tests are marked `browser`: skipped where Chromium or chromedriver is missing, failed instead
when IWSFT_REQUIRE_BROWSER=1 (CI sets it; .ci/run installs Debian's chromium and chromium-driver)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.evaluation import store

CLOSE, NAT = "\n<|im_start|>answer\nFinal Answer:", "<|im_start|>answer"
DELIMS = {"name": "s1", "answer_prefix": NAT, "final_answer_close": CLOSE, "wait": "Wait"}


def _row(pid, thinking_parts, answer, gold, correct, extracted, capped=False, **kw):
    """A stored row as the runner writes it: the forced Waits between `thinking_parts`, then the close."""
    text, forced = thinking_parts[0], []
    for part in thinking_parts[1:]:
        forced.append([len(text), len(text) + 4, "wait"])
        text += "Wait" + part
    close = CLOSE if capped else NAT
    forced.append([len(text), len(text) + len(close), "close"])
    text += close + answer
    return {"problem_id": pid, "sample_index": 0, "response": text, "thinking_tokens": 10 * len(text) // 7, "answer_tokens": 3,
            "total_tokens": 0, "extracted": extracted, "correct": correct, "gold": gold, "finish_reason": "stop",
            "hit_cap": capped, "num_waits": len(thinking_parts) - 1, "thinking_cap": 4000, "forced": forced, **kw}


def write_run(root: Path, model: str, bench: str, rows: list[dict], wait: int, weights: str) -> Path:
    d = root / model / bench / f"{wait:012d}"
    d.mkdir(parents=True)
    scored = [r for r in rows if not r.get("no_room")]
    (d / "settings.json").write_text(json.dumps({"model": model, "benchmark": bench, "wait": wait, "thinking_budget": 4000,
                                                 "samples": 1, "prompt": {"delimiters": DELIMS}}))
    (d / "metrics.json").write_text(json.dumps({"benchmark": bench, "n": len(scored), "accuracy": sum(r["correct"] for r in scored) / len(scored),
                                                "ci95": [0.1, 0.9], "weights_id": weights, "problem_ids": [r["problem_id"] for r in rows]}))
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def tiny_runs(root: Path) -> dict[str, Path]:
    """Two checkpoints on arith: A with forced Waits (one fixed the answer, one broke it, one kept it), B without."""
    a = [_row("p1", ["2+4 is 5. The answer is 5. ", " 2+4 is 6 really. The answer is 6."], " 6", "6", True, "6"),
         _row("p2", ["3+3: the answer is 6. ", " no, the answer is 7."], " 7", "6", False, "7"),
         _row("p3", ["5+5 = 10 </script><!-- <script>", "", " hmm"], " 10", "10", True, "10"),   # text that could end a script
         _row("p4", ["1+1 " * 30], "", "2", False, None, capped=True),
         _row("p5", ["7+1: The answer is 8. ", " yes, the answer is 8."], " 8", "8", True, "8"),
         {"problem_id": "p6", "sample_index": 0, "no_room": True, "correct": None, "response": None, "prompt_tokens": 9, "total_budget": 8}]
    b = [_row("p1", ["4+2 = 6"], " 6", "6", True, "6"), _row("p2", ["3+3 = 6"], " 6", "6", True, "6"),
         _row("p3", ["5+5 = 11"], " 11", "10", False, "11"), _row("p4", ["1+1 = 2"], " 2", "2", True, "2"),
         _row("p5", ["7+1=8"], " 8", "8", True, "8")]
    return {"A": write_run(root, "ckpt-A", "arith", a, 2, "aaaa1111"), "B": write_run(root, "ckpt-B", "arith", b, 0, "bbbb2222")}


def rows_of(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "samples.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------- without a browser


def test_spans_recorded_inferred_or_unknown():
    from harness.view.waits import spans

    r = _row("p", ["a ", " b"], " 1", "1", True, "1")
    assert spans(r, DELIMS) == (r["forced"], "recorded")
    legacy = {k: v for k, v in r.items() if k != "forced"}
    assert spans(legacy, DELIMS) == (r["forced"], "inferred")          # one "Wait" in the text, one forced: unambiguous
    own = dict(legacy, response="Wait, a " + legacy["response"])      # the model wrote "Wait" too: which was forced is unknown
    assert spans(own, DELIMS)[1] == "unknown" and all(k == "close" for _, _, k in spans(own, DELIMS)[0])
    moved = dict(r, response="x" + r["response"])                      # offsets that no longer point at "Wait" are not trusted
    assert spans(moved, DELIMS)[1] == "inferred"


def test_effects_compare_the_answer_stated_before_the_first_wait(tmp_path):
    from harness.view.waits import effects, spans

    rows = rows_of(tiny_runs(tmp_path)["A"])
    got = effects("arith", rows, [spans(r, DELIMS)[0] for r in rows], NAT)
    assert [e and e["effect"] for e in got] == ["fixed", "broke", "none-before", None, "same", None]
    assert got[0]["before"] == ["5"] and got[0]["before_correct"] is False and got[2]["before"] == [None, None]


def test_view_writes_one_page_and_refuses_bad_input(tmp_path, capsys):
    runs = tiny_runs(tmp_path / "evals")
    assert main(["view", str(tmp_path / "evals")]) == 0
    page = (tmp_path / "evals" / "view.html").read_text()
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page   # nothing fetched
    assert rows_of(runs["A"])[0]["response"] in json.loads(json.dumps(page)) or "2+4 is 5" in page
    assert main(["view", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["view", str(tmp_path / "empty")]) == 2 and not (tmp_path / "empty" / "view.html").exists()
    capsys.readouterr()
    (tmp_path / "notes.txt").write_text("x")
    assert main(["view", str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file; give a report folder" in err
    # a report's own file means its folder
    (tmp_path / "evals" / "view.html").unlink()
    (tmp_path / "evals" / "compare.md").write_text("# compare\n")
    assert main(["view", str(tmp_path / "evals" / "compare.md")]) == 0 and (tmp_path / "evals" / "view.html").is_file()


def test_gpqa_question_and_options_never_reach_the_page(tmp_path, monkeypatch):
    from harness.evaluation import runner as ev
    from test_benchmarks import secret_texts, write_fake_gpqa_csv
    from test_evaluate import FakeEngine

    monkeypatch.setattr(ev, "Engine", FakeEngine)
    monkeypatch.delenv("IWSFT_GPQA_CSV", raising=False)
    csv = write_fake_gpqa_csv(tmp_path / "gpqa.csv")
    out = tmp_path / "evals"
    assert main(["eval", "--model", "fake", "--benchmarks", "gpqa_diamond", "--limit", "2", "--gpqa-csv", str(csv),
                 "--out", str(out), "--no-progress"]) == 0
    secrets = secret_texts()
    (gdir,) = (out / "fake" / "gpqa_diamond").iterdir()
    rows = rows_of(gdir)        # as another tool might have left them: the question beside and inside each row
    for r in rows:
        r.update(question=secrets[0], options=secrets[1:4], response=f"The question says: {secrets[0]} so {r['response']}")
    (gdir / store.SAMPLES_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["view", str(out), "--out", str(tmp_path / "a.html"), "--gpqa-csv", str(csv)]) == 0
    page = (tmp_path / "a.html").read_text()
    assert not [s for s in secrets if s in page] and store.REDACTED in page
    assert main(["view", str(out), "--out", str(tmp_path / "b.html")]) == 0      # without the CSV: the fields are dropped
    assert secrets[1] not in (tmp_path / "b.html").read_text()


# ---------------------------------------------------------------------------- in Chromium


def _chromium() -> tuple[str | None, str | None]:
    return (shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome"),
            shutil.which("chromedriver"))


@pytest.fixture(scope="module")
def browser():
    binary, driver = _chromium()
    why = None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        why = "selenium is not installed (pip install -e '.[dev]')"
    if not why and not (binary and driver):
        why = "Chromium or chromedriver is missing (apt-get install chromium chromium-driver)"
    if why:
        if os.environ.get("IWSFT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"IWSFT_REQUIRE_BROWSER=1 but {why}", pytrace=False)
        pytest.skip(why)
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        opts.add_argument(a)
    opts.binary_location = binary
    d = webdriver.Chrome(service=Service(driver), options=opts)
    yield d
    d.quit()


@pytest.fixture
def page(tmp_path):
    from harness.paper.report import build_table
    runs = tiny_runs(tmp_path / "evals")
    report = tmp_path / "report"
    report.mkdir()
    loaded = {n: {"arith": store.load_run(d)} for n, d in runs.items()}
    (report / "table1.json").write_text(json.dumps(build_table({"A": [loaded["A"]], "B": [loaded["B"]]}, [["B", "A"]], [], "tiny")))
    (report / "figure2.json").write_text(json.dumps({"preset": "t", "cells": [], "models": {"A": {"arith": [
        {"thinking_budget": 4000, "wait": 2, "accuracy": 0.6, "n": 5, "thinking_tokens_mean": 40.0, "run_dir": str(runs["A"])}]}}}))
    assert main(["view", str(report)]) == 0
    return report / "view.html", runs


def _select(d, sel_id, value):
    from selenium.webdriver.support.ui import Select

    Select(d.find_element("id", sel_id)).select_by_value(value)


def _tab(d, name):
    d.find_element("css selector", f"nav button[data-tab={name}]").click()


@pytest.mark.browser
def test_page_filters_match_samples_jsonl(browser, page):
    path, runs = page
    d = browser
    d.get(path.resolve().as_uri())
    assert not [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    rows = {n: rows_of(p) for n, p in runs.items()}
    _tab(d, "samples")
    count = lambda: int(d.find_element("id", "count").text)
    assert count() == sum(map(len, rows.values())) == 11
    _select(d, "f-verdict", "correct")
    assert count() == sum(r.get("correct") is True for rs in rows.values() for r in rs)
    _select(d, "f-run", "A")
    assert count() == sum(r.get("correct") is True for r in rows["A"])
    _select(d, "f-verdict", "no_room")
    assert count() == 1
    _select(d, "f-verdict", "")
    d.find_element("id", "f-cap").click()
    assert count() == sum(bool(r.get("hit_cap")) for r in rows["A"]) == 1
    # the done-criterion: every response where a forced Wait changed the answer, in one click
    _tab(d, "tables")
    d.find_element("id", "q-changed").click()       # from any tab
    assert count() == 2 and d.find_element("id", "q-changed").text.endswith("(2)")
    listed = [e.text for e in d.find_elements("css selector", "#list .row:not(.head) span:nth-child(2)")]
    assert sorted(listed) == ["p1", "p2"]
    _select(d, "f-sort", "think-desc")
    _select(d, "f-effect", "")
    thinking = [int(e.text.split()[0]) for e in d.find_elements("css selector", "#list .row:not(.head) span:nth-child(5)")]
    assert thinking == sorted(thinking, reverse=True) and len(thinking) == 11
    d.find_element("id", "f-q").send_keys("p3")
    import time
    time.sleep(0.4)
    assert count() == 2


@pytest.mark.browser
def test_one_response_highlights_every_forced_token(browser, page):
    path, runs = page
    d = browser
    d.get(path.resolve().as_uri())
    _tab(d, "samples")
    _select(d, "f-run", "A")
    row = rows_of(runs["A"])[2]       # p3: two forced Waits (the model wrote nothing after the first)
    d.find_elements("css selector", "#list .row:not(.head)")[2].click()
    pane = d.find_element("id", "resp")
    marks = pane.find_elements("css selector", ".text mark.forced")
    got = [(m.text, m.get_attribute("class")) for m in marks]
    want = [(row["response"][a:b].strip(), f"forced forced-{k}") for a, b, k in row["forced"]]
    assert got == want and len(got) == 3
    parts = pane.find_elements("css selector", ".text")
    assert "".join(p.get_attribute("textContent") for p in parts) == row["response"]     # every character shown once
    assert "thinking" in parts[0].get_attribute("class") and "answer" in parts[1].get_attribute("class")
    text = pane.text
    assert "gold\n10" in text and "extracted\n10" in text and "aaaa1111" in text and "wait 2" in text
    assert "model=ckpt-A" in pane.find_element("css selector", "details").get_attribute("textContent")
    d.find_element("css selector", "body").send_keys("j")                # the next one, from the keyboard
    assert "p4, sample 0" in d.find_element("id", "resp").text


@pytest.mark.browser
def test_two_checkpoints_side_by_side_disagreements_first(browser, page):
    from selenium.webdriver.common.action_chains import ActionChains

    path, runs = page
    d = browser
    d.get(path.resolve().as_uri())
    a, b = ({r["problem_id"]: r["correct"] for r in rows_of(runs[n]) if not r.get("no_room")} for n in "AB")
    dis = sorted(p for p in a if p in b and a[p] != b[p])
    _tab(d, "compare")
    _select(d, "c-a", "0")
    _select(d, "c-b", "1")
    items = [e.text for e in d.find_elements("css selector", "#c-list .row:not(.head) span:nth-child(2)")]
    assert sorted(items[:len(dis)]) == dis and len(items) == len(set(a) & set(b))
    assert f"{len(dis)} disagreements" in d.find_element("id", "c-sum").text
    d.find_elements("css selector", "#c-list .row:not(.head)")[0].click()
    view = d.find_element("id", "c-view")
    assert [h.text[:2] for h in view.find_elements("css selector", "h2")] == ["A:", "B:"]
    assert len(view.find_elements("css selector", ".facts")) == 2
    # Table 1 and Figure 2: hovering shows the numbers
    _tab(d, "tables")
    runs_table = d.find_element("id", "runs").text.splitlines()
    assert "1 / 1 / 0" in runs_table[1] and "0 / 0 / 0" in runs_table[2]      # A's Waits: one fixed, one broke
    cell = d.find_elements("css selector", "#table1 td[data-tip]")[0]
    ActionChains(d).move_to_element(cell).perform()
    assert "95% CI" in d.find_element("id", "tip").text
    ActionChains(d).move_to_element(d.find_element("css selector", "#figure2 circle.pt")).perform()
    tip = d.find_element("id", "tip").text
    assert "accuracy 60.0%" in tip and "[" in tip and "budget 4000, Wait 2" in tip


def test_reports_write_the_page_beside_them(tmp_path):
    from rich.console import Console

    from harness.view.page import write_beside

    runs = tiny_runs(tmp_path / "evals")
    report = tmp_path / "report"
    report.mkdir()
    (report / "figure2.json").write_text(json.dumps({"preset": "t", "cells": [], "models": {"A": {"arith": [
        {"thinking_budget": 4000, "wait": 2, "accuracy": 0.6, "n": 5, "thinking_tokens_mean": 40.0, "run_dir": str(runs["A"])}]}}}))
    console = Console(record=True, width=200)
    write_beside(report, console)
    page = (report / "view.html").read_text()
    assert "2+4 is 5" in page and '"ci95":[' in page          # the sweep's run and its interval came in through figure2.json
    shutil.rmtree(runs["A"])
    write_beside(report, console)          # a run folder gone: said, and the page is still written
    assert "1 run folder(s) the reports name are not here" in console.export_text()
    write_beside(tmp_path / "evals" / "ckpt-A", console)          # nothing to show here is said, not raised
    write_beside(tmp_path / "nothing", console)
    assert "no view.html" in console.export_text()
