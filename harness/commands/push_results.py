"""`iwsft push-results RUN_DIR --repo-id ORG/NAME`."""

from __future__ import annotations

HELP = "push evaluation runs (metrics, settings, per-sample rows; no GPQA question text) to a hub dataset repo"


def add_arguments(p):
    p.add_argument("run_dir", help="an `iwsft eval --out` folder, a model folder in it, or one run folder")
    p.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="the hub dataset repo (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--gpqa-csv", default=None, metavar="PATH",
                   help="GPQA Diamond CSV: redact its questions and options from GPQA responses once more before upload "
                        "(default $IWSFT_GPQA_CSV); GPQA rows never carry question or prompt fields either way")
    p.add_argument("--token", default=None, help="hub token (default: HF_TOKEN or the saved login)")


def run(args) -> int:
    from harness.publish import results

    results.push(args.run_dir, args.repo_id, private=args.private, token=args.token, gpqa_csv=args.gpqa_csv)
    return 0
