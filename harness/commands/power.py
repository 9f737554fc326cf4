"""`iwsft power`: the smallest difference between two methods a design detects, and the design a
difference needs (harness.core.power; the model is in docs/method.md#power)."""

from __future__ import annotations

HELP = ("Plan a comparison: the minimum difference detected with 80% power by a design (clusters, items, seeds "
        "per arm) under the report's paired t test over seeds, or the seeds and clusters a given difference needs, "
        "from a pilot or an assumed seed SD")


def add_arguments(p):
    src = p.add_argument_group("pilot (what the noise is; one of them, or the design flags alone)")
    src.add_argument("--pilot", metavar="REPORT", help="a finished `reproduce-table1 --seeds N` report: its folder or table1.json")
    src.add_argument("--pilot-runs", nargs="+", metavar="DIR", help="evaluation run folders of one method, one per training seed")
    src.add_argument("--benchmark", help="the pilot report's benchmark (default: its first clustered one, e.g. arith)")
    src.add_argument("--pair", metavar="A,B", help="the two methods whose per-seed differences B - A give the noise "
                                                  "(default: the report's first two trained rows)")
    des = p.add_argument_group("design (default: the pilot's)")
    des.add_argument("--clusters", type=int, help="independent clusters in the test set (default: the pilot's)")
    des.add_argument("--items-per-cluster", type=float, help="correlated items per cluster (default: the pilot's, else 1)")
    des.add_argument("--seeds", type=int, help="training seeds per method (default: the pilot's, else 3)")
    des.add_argument("--accuracy", type=float, help="expected accuracy in %% (default: the pilot's, else 50, the worst case)")
    des.add_argument("--icc", type=float, help="intra-cluster correlation of outcomes, 0-1 (default: the pilot's, else 0)")
    des.add_argument("--seed-sd", type=float, help="SD of one method's accuracy between training seeds beyond test sampling, "
                                                   "in points (default: the pilot's, its own sampling noise removed)")
    des.add_argument("--diff-sd", type=float, help="SD of the per-seed difference B - A between training seeds beyond test "
                                                   "sampling, in points: the noise of the report's paired test over seeds "
                                                   "(default: the pilot's, else sqrt(2) x --seed-sd, arms sharing nothing)")
    des.add_argument("--discordance", type=float, help="%% of items on which a checkpoint of A and one of B disagree "
                                                       "(default: the pilot's, else 2p(1 - p), independent errors)")
    des.add_argument("--alpha", type=float, default=None, help="two-sided level (default: the report's, 0.05)")
    p.add_argument("--diff", type=float, help="a difference in points: print the seeds and clusters it needs (80%% power)")
    p.add_argument("--power", type=float, default=0.8, help="target power")


def _check(args) -> None:
    from harness.core.errors import UserError

    if args.pilot and args.pilot_runs:
        raise UserError("give --pilot REPORT or --pilot-runs DIR..., not both")
    if not (args.pilot or args.pilot_runs) and args.seed_sd is None and args.diff_sd is None:
        raise UserError("no noise to plan with: give --pilot REPORT (a `--seeds N` report), --pilot-runs DIR..., "
                        "or an assumed --seed-sd POINTS (or --diff-sd POINTS) with --clusters")
    if not (args.pilot or args.pilot_runs) and args.clusters is None:
        raise UserError("without a pilot the design needs --clusters N (and --items-per-cluster, --icc when items are correlated)")
    checks = [("--clusters", args.clusters, lambda x: x >= 1, ">= 1"),
              ("--items-per-cluster", args.items_per_cluster, lambda x: x >= 1, ">= 1"),
              ("--seeds", args.seeds, lambda x: x >= 1, ">= 1"),
              ("--accuracy", args.accuracy, lambda x: 0 < x < 100, "a percentage strictly between 0 and 100"),
              ("--icc", args.icc, lambda x: 0 <= x <= 1, "between 0 and 1"),
              ("--seed-sd", args.seed_sd, lambda x: 0 <= x < 100, "points between 0 and 100"),
              ("--diff-sd", args.diff_sd, lambda x: 0 <= x < 100, "points between 0 and 100"),
              ("--discordance", args.discordance, lambda x: 0 < x <= 100, "a percentage above 0, at most 100"),
              ("--alpha", args.alpha, lambda x: 0 < x < 1, "between 0 and 1 (e.g. 0.05)"),
              ("--diff", args.diff, lambda x: 0 < x < 100, "points above 0 and below 100 (e.g. 3)"),
              ("--power", args.power, lambda x: 0.5 <= x < 1, "between 0.5 and 1 (e.g. 0.8)")]
    for flag, value, ok, want in checks:
        if value is not None and not ok(value):
            raise UserError(f"{flag} must be {want}, got {value:g}")


def run(args) -> int:
    from pathlib import Path

    from harness.core import power
    from harness.core.errors import UserError
    from harness.core.stats import plural
    from harness.paper.power import pilot_from_report, pilot_from_run_dirs

    _check(args)
    alpha = power.ALPHA if args.alpha is None else args.alpha
    pilot = None
    if args.pilot:
        pair = None
        if args.pair:
            pair = tuple(x.strip() for x in args.pair.split(","))
            if len(pair) != 2 or not all(pair):
                raise UserError(f"--pair takes two method names, A,B (e.g. sft,iw-sft), not {args.pair!r}")
        pilot = pilot_from_report(Path(args.pilot), args.benchmark, pair)
    elif args.pilot_runs:
        if args.pair:
            raise UserError("--pair needs --pilot REPORT (--pilot-runs holds one method)")
        pilot = pilot_from_run_dirs(args.pilot_runs, args.benchmark)
    if pilot is not None:
        if args.seed_sd is None and args.diff_sd is None and pilot.observed_sd is None:
            raise UserError("the pilot has one seed per method, so no seed-to-seed noise; run it with --seeds 2 or more, "
                            "or give an assumed --seed-sd POINTS (or --diff-sd POINTS)")
        base = pilot.design(alpha)
        if args.seed_sd is not None and args.diff_sd is None:
            base = base.with_(diff_sd=None)           # an assumed seed SD replaces the pilot's difference noise
        print(f"pilot: {pilot.benchmark}, {', '.join(pilot.methods)}; {plural(pilot.seeds, 'seed')} per method, "
              f"{plural(pilot.clusters, 'cluster')} x {power.items(pilot.items_per_cluster)}, accuracy {100 * pilot.accuracy:.1f}%, "
              f"icc of outcomes {pilot.icc:.2f}" + (f", observed seed SD {100 * pilot.observed_sd:.2f} points -> "
                                        f"{100 * base.seed_sd:.2f} beyond its test sampling" if pilot.observed_sd is not None else ""))
        if pilot.seed_diffs and len(pilot.seed_diffs) >= 2:
            a, b = pilot.pair
            print(f"pilot's per-seed differences {b} - {a} (seed i with seed i; --pair A,B for another two): "
                  + " ".join(f"{100 * x:+.1f}" for x in pilot.seed_diffs)
                  + f" points; SD {100 * pilot.observed_diff_sd:.2f} -> {100 * base.pair_sd():.2f} beyond its test sampling "
                  f"({len(pilot.seed_diffs) - 1} df: an SD from few seeds is itself uncertain); discordance "
                  f"{100 * base.disc():.1f}%, icc of the paired differences {base.icc:.2f}")
            if base.diff_sd == 0 and args.diff_sd is None:
                print("note: the per-seed differences vary no more than test sampling explains, so the seed noise is "
                      "planned as 0; from so few seeds that is weak evidence: compare with an assumed --diff-sd")
        elif pilot.observed_sd is not None and base.seed_sd == 0 and args.seed_sd is None and args.diff_sd is None:
            print("note: the seeds' accuracies vary no more than test sampling explains, so the seed noise is planned "
                  "as 0; from so few seeds that is weak evidence: compare with an assumed --seed-sd")
    else:
        base = power.Design(clusters=args.clusters, items_per_cluster=1.0, seeds=3, alpha=alpha)
    d = base.with_(**{k: v for k, v in {
        "clusters": args.clusters, "items_per_cluster": args.items_per_cluster, "seeds": args.seeds,
        "accuracy": None if args.accuracy is None else args.accuracy / 100, "icc": args.icc,
        "seed_sd": None if args.seed_sd is None else args.seed_sd / 100,
        "diff_sd": None if args.diff_sd is None else args.diff_sd / 100,
        "discordance": None if args.discordance is None else args.discordance / 100}.items() if v is not None})
    target = args.power
    pct = f"{100 * target:.0f}%"
    print(f"design: {power.describe(d)}")
    print(f"test planned: the report's t test over training seeds of the per-seed paired differences B - A "
          f"({max(d.seeds - 1, 0)} df), two-sided at {d.alpha:g}")
    if d.seeds < 2:
        print("note: with 1 seed per method no test over seeds exists; the figure is the z approximation's "
              "(test sampling and the stated seed SD)")
    print(f"minimum detectable difference ({pct} power): {100 * power.mdd(d, target):.2f} points")
    if args.diff is not None:
        diff = args.diff / 100
        print(f"power at {args.diff:g} points: {100 * power.power(d, diff):.1f}%")
        s = power.seeds_needed(d, diff, target)
        print(f"seeds per method needed at {plural(d.clusters, 'cluster')}: "
              + (str(s) if s else f"more than {power.MAX_SEEDS}"))
        for seeds in sorted({2, 3, 5, 8, 10, 20, d.seeds} - {0, 1}):
            c = power.clusters_needed(d.with_(seeds=seeds), diff, target)
            print(f"  {seeds:>3} seeds per method: "
                  + (f"{plural(c, 'cluster')} of {power.items(d.items_per_cluster)}" if c else
                     "no number of clusters suffices (the seed noise alone is too large)"))
    return 0
