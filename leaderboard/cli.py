"""The ``submit``, ``leaderboard`` and ``gate`` subcommands of ``debias-bench``.

``register(subparsers)`` adds them to the main parser; each handler returns an exit code and raises
:class:`benchmark.errors.BenchError` for problems the user can fix (printed as one line).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from benchmark.errors import BenchError

# The project's own leaderboard, wherever the command runs from (never the working directory's):
# entries/ (accepted bundles), studies/ (shipped study.json files) and site/ (the built page).
DEFAULT_LEADERBOARD = Path(__file__).resolve().parent
DEFAULT_ENTRIES = DEFAULT_LEADERBOARD / "entries"


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got {text!r}")
    return value


def cmd_submit(args: argparse.Namespace) -> int:
    from leaderboard.submission import pack

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise BenchError(f"{run_dir}: run directory not found")
    out = pack(run_dir, args.out, label=args.label, code=args.code)
    print(f"bundle: {out} (checked: hashes, schema, every fairness, FID and CLIP number recomputed)")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from leaderboard.html import build_leaderboard
    from leaderboard.submission import add_entry

    entries = Path(args.entries) if args.entries else Path(args.leaderboard) / "entries"
    out = Path(args.out) if args.out else entries.parent / "site"
    if args.action == "add":
        if not args.bundle:
            raise BenchError("leaderboard add: give the bundle to add, e.g. `debias-bench leaderboard add run.zip`")
        if not Path(args.bundle).is_file():
            raise BenchError(f"{args.bundle}: bundle not found")
        from leaderboard.figures_ahead import FiguresAhead
        from leaderboard.quality_ahead import QualityAhead

        # the quality check and the page's figures each in a second process while the fairness records are recomputed
        with QualityAhead() as quality, FiguresAhead(entries, out) as ahead:
            entry = add_entry(args.bundle, entries, on_checked=ahead.start, quality=quality.start)
            ahead.finish()
        print(f"accepted: {entry}")
    elif args.bundle:
        raise BenchError("leaderboard build takes no bundle; use `leaderboard add BUNDLE`")
    page = build_leaderboard(entries, out)
    print(f"leaderboard: {page} (tables in {page.parent / 'tables'})")
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from leaderboard.gate import run_gate

    if not Path(args.current).exists():
        raise BenchError(f"{args.current}: current run not found")
    return run_gate(args.current, args.baseline, args.tolerance, args.require_baseline, args.all,
                    args.relative_tolerance, args.json)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``submit``, ``leaderboard {add,build}`` and ``gate`` to the ``debias-bench`` parser."""
    p = subparsers.add_parser("submit", help="pack a run directory into a checked leaderboard bundle")
    p.add_argument("run_dir", help="results/<run-id>")
    p.add_argument("--out", help="bundle path (default: next to the run, <run-id>.zip)")
    p.add_argument("--label", help="the entry's name on the leaderboard page, e.g. 'DiffLens K=80 (lab X)' "
                                   "(default: the run id)")
    p.add_argument("--code", help="where the code that made the run is, e.g. a repository URL at a commit")
    p.set_defaults(func=cmd_submit)

    p = subparsers.add_parser("leaderboard", help="add a bundle to the leaderboard, or rebuild its tables and page")
    p.add_argument("action", choices=["add", "build"], help="add: check a bundle and add it as an entry, then "
                                                            "rebuild the page; build: rebuild the page only")
    p.add_argument("bundle", nargs="?", help="bundle to add (for `add`)")
    p.add_argument("--leaderboard", metavar="DIR", default=str(DEFAULT_LEADERBOARD),
                   help="the leaderboard folder: entries/, studies/ and site/ inside it (default: the project's, "
                        "%(default)s, wherever the command runs)")
    p.add_argument("--entries", metavar="DIR", help="entries folder, if not DIR/entries (its parent's studies/ "
                                                    "are shown)")
    p.add_argument("--out", help="output directory for index.html and tables/ (default: <entries>/../site)")
    p.set_defaults(func=cmd_leaderboard)

    p = subparsers.add_parser("gate", help="compare a run with a baseline; exit 1 when a metric got worse")
    p.add_argument("current", help="current run directory (or its results.json)")
    p.add_argument("--baseline", required=True, help="baseline run directory (or its results.json)")
    p.add_argument("--tolerance", type=_tolerance, default=0.0,
                   help="extra absolute slack added to the combined CI half-widths (default: %(default)s)")
    p.add_argument("--relative-tolerance", type=_tolerance, default=0.05,
                   help="slack for metrics without an interval (FID, KID), as a fraction of the baseline's value "
                        "(default: %(default)s)")
    p.add_argument("--require-baseline", action="store_true", help="fail when the baseline is missing")
    p.add_argument("--all", action="store_true", help="list every metric, not only those that moved or are missing")
    p.add_argument("--json", metavar="FILE", help="write the full comparison (every metric) as JSON to FILE")
    p.set_defaults(func=cmd_gate)
