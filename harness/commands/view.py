"""`iwsft view PATH ...`: one static HTML page of reports and evaluation runs."""

from __future__ import annotations

HELP = "write one static HTML page (opens from the file system) with Table 1, Figure 2 and every response of the runs"


def add_arguments(p):
    p.add_argument("paths", nargs="+", metavar="RUN_OR_REPORT_DIR",
                   help="a report folder (table1.json / figure2.json: their runs are read too), an `iwsft eval --out` "
                        "folder, a model folder in it or a run folder; several are shown together")
    p.add_argument("--out", default=None, help="the page to write (default: view.html in the first folder given)")
    p.add_argument("--gpqa-csv", default=None, help="GPQA Diamond's CSV: its responses are redacted once more against the "
                                                   "questions and options (as push-results); IWSFT_GPQA_CSV works too")


def run(args) -> int:
    from pathlib import Path

    from harness.core.io import check_output_file
    from harness.view.page import PAGE, write_page

    first = Path(args.paths[0]).expanduser()
    out = Path(args.out) if args.out else (first if first.is_dir() else first.parent) / PAGE
    check_output_file(out, "--out")
    page = write_page(args.paths, out, args.gpqa_csv)
    print(f"wrote {page} ({page.stat().st_size / 1e6:.1f} MB); open it in a browser: file://{page.resolve()}")
    return 0
