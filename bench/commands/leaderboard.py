"""`neokd-bench leaderboard build [--results DIR ...] --out SITE`: the static site from result files (no torch)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..contract import name_problem
from ..errors import UsageError

DEFAULT_RESULTS = Path(__file__).resolve().parents[2] / "leaderboard" / "results"
DEFAULT_EFFICIENCY = DEFAULT_RESULTS.parent / "efficiency"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("leaderboard", help="build the static leaderboard site from result files")
    lsub = p.add_subparsers(dest="leaderboard_command", metavar="ACTION", parser_class=type(p))
    b = lsub.add_parser("build", help="render result files into a static site (offline, deterministic)")
    b.add_argument("--results", action="append", metavar="DIR",
                   help="folder of result JSON files, searched recursively (repeatable; default: "
                        "the committed leaderboard/results)")
    b.add_argument("--efficiency", action="append", metavar="DIR",
                   help="folder of efficiency eval files, searched recursively, joined to the result of the same "
                        "checkpoint (repeatable; default: the committed leaderboard/efficiency)")
    b.add_argument("--reported", metavar="DIR", help="folder of reported-number files (default: the bundled ones)")
    b.add_argument("--out", required=True, metavar="SITE", help="output folder of the site")
    b.add_argument("--baseline", default="adv", metavar="DEFENSE",
                   help="defense every other is compared against (differences, savings; default adv, the "
                        "paper's adversarial training)")
    b.set_defaults(func=run_build)
    p.set_defaults(func=_no_action)


def _no_action(args: argparse.Namespace) -> int:
    raise UsageError("leaderboard needs an action; type `neokd-bench leaderboard build --out SITE`")


def run_build(args: argparse.Namespace) -> int:
    from ..leaderboard.reported import REPORTED_DIR
    from ..leaderboard.site import build

    results = args.results or [DEFAULT_RESULTS]
    efficiency = args.efficiency or ([DEFAULT_EFFICIENCY] if DEFAULT_EFFICIENCY.is_dir() else [])
    problem = name_problem("--baseline", args.baseline)
    if problem:
        raise UsageError(problem.replace("result field --baseline", "--baseline"))
    info = build(results, args.out, args.reported or REPORTED_DIR, efficiency, baseline=args.baseline)
    print(f"built {info['pages']} pages from {info['files']} result files ({info['entries']} entries) "
          f"into {args.out}; open {Path(args.out) / 'index.html'}")
    return 0
