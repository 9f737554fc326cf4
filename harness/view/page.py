"""`iwsft view`: one static HTML page (opens from file://, no network, no server) with Table 1,
Figure 2 and every stored response of the runs it is given.

The page is template.html with the data embedded as JSON: a small table of rows (no text) parsed at
open, then each response in a script element of its own, after the app, parsed only when it is shown
or searched (the page is drawn before the parser reaches them).
Non-public benchmarks (GPQA Diamond) keep only push-results' SAFE_FIELDS, their responses redacted
as push-results redacts them: no question or option text reaches the page.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from harness.core.errors import UserError
from harness.evaluation import store
from harness.publish import results
from harness.view import waits

TEMPLATE = Path(__file__).with_name("template.html")
PAGE = "view.html"
# one row of the page, in this order (compact: 1e4 rows of names would dominate the open time)
COLUMNS = ("run", "problem_id", "sample_index", "correct", "extracted", "gold", "thinking_tokens", "answer_tokens",
           "hit_cap", "num_waits", "no_room", "finish_reason", "spans_source", "effect", "before", "before_correct", "spans")


def report_files(folder: Path) -> tuple[dict | None, dict | None]:
    return store.read_json(folder / "table1.json"), store.read_json(folder / "figure2.json")


def collect(paths: list[str | Path], warn=print) -> tuple[dict | None, dict | None, dict[Path, str]]:
    """(table1, figure2, run folder -> label) from report folders and evaluation folders; `warn` hears
    of run folders a report names that are not here (their responses are left out)."""
    table1 = figure2 = None
    runs: dict[Path, str] = {}
    gone: set[str] = set()
    for p in map(lambda x: Path(x).expanduser(), paths):
        if not p.exists():
            raise UserError(f"{p} does not exist; give a report folder (table1.json / figure2.json) or an `iwsft eval --out` folder")
        if p.is_file():      # a report's own file (table1.md, figure2.json, ...): its folder is meant
            if not (p.name.startswith(("table1.", "figure2.", "compare.")) or p.name == "view.html"):
                raise UserError(f"{p} is a file; give a report folder (table1.json / figure2.json) or an `iwsft eval "
                                "--out` folder, a model folder in it or a run folder")
            p = p.parent
        t, f = report_files(p) if p.is_dir() else (None, None)
        table1, figure2 = table1 or t, figure2 or f
        for row in (t or {}).get("rows", []):
            for b, c in row["benchmarks"].items():
                seeds = c.get("per_seed") or [c]
                for i, s in enumerate(seeds):
                    gone.update([s["run_dir"]] if s.get("run_dir") and not Path(s["run_dir"]).is_dir() else [])
                    if s.get("run_dir") and Path(s["run_dir"]).is_dir():
                        runs.setdefault(Path(s["run_dir"]).resolve(), row["model"] + (f" seed {i + 1}" if len(seeds) > 1 else ""))
        for name, per in (f or {}).get("models", {}).items():
            for pts in per.values():
                for pt in pts:
                    gone.update([pt["run_dir"]] if pt.get("run_dir") and not Path(pt["run_dir"]).is_dir() else [])
                    if pt.get("run_dir") and Path(pt["run_dir"]).is_dir():
                        runs.setdefault(Path(pt["run_dir"]).resolve(), f"{name} budget {pt['thinking_budget']} wait {pt['wait']}")
        if not (t or f):
            for d in results.run_dirs(p):
                runs.setdefault(d.resolve(), "")
    if gone:
        warn(f"note: {len(gone)} run folder(s) the reports name are not here (e.g. {sorted(gone)[0]}; paths are relative to "
             "where the report was made): their responses are left out")
    if not runs and not (table1 or figure2):
        raise UserError(f"nothing to show under {', '.join(map(str, paths))}: no table1.json, figure2.json or finished evaluation runs")
    return table1, figure2, _labels(runs)


def _labels(runs: dict[Path, str]) -> dict[Path, str]:
    """A run folder given directly is labelled by its model folder, and by the settings that tell
    apart two runs of one model and benchmark (wait=0 / wait=2)."""
    out = dict(runs)
    groups: dict[tuple, list[Path]] = {}
    for d, lab in runs.items():
        if not lab:
            groups.setdefault((d.parent.parent.name, d.parent.name), []).append(d)
    for (model, _), ds in groups.items():
        diff = store.differing_settings(ds, ignore=("settings_sha256",)) if len(ds) > 1 else []
        for d in ds:
            s = store.read_json(d / store.SETTINGS_FILE) or {}
            extra = " ".join(f"{k}={json.dumps(s.get(k), sort_keys=True)}" for k in diff)[:60]
            out[d] = (model + (f" {extra}" if extra else "")) if len(ds) == 1 or extra else f"{model} {d.name}"
    return out


def _run_info(d: Path, label: str, private: list[str]) -> tuple[dict, list[dict]]:
    settings = store.read_json(d / store.SETTINGS_FILE) or {}
    metrics = store.read_json(d / store.METRICS_FILE) or {}
    bench = metrics.get("benchmark") or settings.get("benchmark") or d.parent.name
    public = results.is_public(bench)
    rows = [results.public_row(r, public, private if not public else ()) for _, r in sorted(store.read_samples(d).items())]
    info = {"label": label, "benchmark": bench, "model": d.parent.parent.name, "path": str(d), "public": public,
            "weights_id": metrics.get("weights_id"), "accuracy": metrics.get("accuracy"), "ci95": metrics.get("ci95"),
            "n": metrics.get("n"), "settings": _shown_settings(settings)}
    return info, rows


def _shown_settings(s: dict) -> dict:
    keep = ("model_arg", "model", "thinking_budget", "wait", "budget_mode", "max_new_tokens", "answer_budget", "samples",
            "temperature", "top_p", "seed", "backend", "dtype", "settings_sha256")
    out = {k: s[k] for k in keep if k in s}
    out["thinking_format"] = ((s.get("prompt") or {}).get("delimiters") or {}).get("name")
    if out.get("settings_sha256"):
        out["settings_sha256"] = out["settings_sha256"][:12]      # the run folder's name
    return out


def page_data(table1: dict | None, figure2: dict | None, runs: dict[Path, str], gpqa_csv: str | None = None) -> tuple[dict, list]:
    """(the page's data without the texts, the responses in row order)."""
    infos, rows_out, texts = [], [], []
    private_cache: dict[str, list[str]] = {}
    for ri, (d, label) in enumerate(runs.items()):
        bench = (store.read_json(d / store.METRICS_FILE) or {}).get("benchmark") or d.parent.name
        if not results.is_public(bench) and bench not in private_cache:
            private_cache[bench] = results.private_texts(bench, gpqa_csv)
        info, rows = _run_info(d, label, private_cache.get(bench, []))
        delims = (((store.read_json(d / store.SETTINGS_FILE) or {}).get("prompt") or {}).get("delimiters") or {})
        sp = [waits.spans(r, delims) for r in rows]
        eff = waits.effects(info["benchmark"], rows, [s for s, _ in sp], (delims.get("answer_prefix") or "<|im_start|>answer").strip())
        infos.append(info)
        for r, (spans, source), e in zip(rows, sp, eff):
            e = e or {}
            rows_out.append([ri, str(r.get("problem_id")), r.get("sample_index", 0), r.get("correct"), r.get("extracted"),
                             None if r.get("gold") is None else str(r.get("gold")), r.get("thinking_tokens"), r.get("answer_tokens"),
                             bool(r.get("hit_cap")), r.get("num_waits") or 0, bool(r.get("no_room")), r.get("finish_reason"),
                             source if r.get("response") else None, e.get("effect"), e.get("before"), e.get("before_correct"), spans])
            texts.append(r.get("response") or "")
    if figure2:
        figure2 = _figure2_intervals(figure2)
    return {"title": (table1 or {}).get("title") or "iwsft view", "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "table1": table1, "figure2": figure2, "runs": infos, "columns": COLUMNS, "rows": rows_out}, texts


def _figure2_intervals(fig: dict) -> dict:
    """Each Figure 2 point with its run's 95% interval (the same as the report's), where its run folder is at hand."""
    from harness.paper.report import cell

    fig = json.loads(json.dumps(fig))
    for per in fig.get("models", {}).values():
        for pts in per.values():
            for pt in pts:
                if pt.get("ci95") is None and pt.get("run_dir") and Path(pt["run_dir"]).is_dir():
                    try:
                        pt["ci95"] = cell(store.load_run(Path(pt["run_dir"])))["ci95"]
                    except UserError:
                        pass
    return fig


def _script_json(obj) -> str:
    """JSON safe inside <script>: no "</" can close the element."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/").replace("<!--", "\\u003c!--")


def render(data: dict, texts: list[str]) -> str:
    head, rest = TEMPLATE.read_text(encoding="utf-8").split("/*DATA*/null", 1)
    mid, tail = rest.split("/*TEXTS*/null", 1)      # split, not replace: a response may hold the marker text
    blocks = "\n".join(f'<script id="t{i}" type="application/json">{_script_json(t)}</script>' for i, t in enumerate(texts))
    return "".join((head, _script_json(data), mid, blocks, tail))


def write_page(paths: list[str | Path], out: Path, gpqa_csv: str | None = None, warn=print) -> Path:
    from harness.core.io import atomic_write_text

    table1, figure2, runs = collect(paths, warn)
    data, texts = page_data(table1, figure2, runs, gpqa_csv)
    atomic_write_text(Path(out), render(data, texts))
    return Path(out)


def write_beside(out_dir: Path, console) -> None:
    """view.html beside a report (reproduce-table1, table1, budget-sweep): its tables, figures and every
    response. The report is written already, so a page that cannot be made is said, not raised."""
    try:
        page = write_page([out_dir], out_dir / PAGE, warn=lambda m: console.print(m, markup=False, highlight=False))
    except UserError as e:
        console.print(f"[yellow]no {PAGE}: {e}[/]")
        return
    console.print(f"wrote {page}: open it in a browser to read every response")
