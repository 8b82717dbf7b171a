"""`neokd-bench validate FILE...`: each result file against its schema, then for consistency.

Prints one line per problem, naming the file and the field, and ``ok FILE`` for a valid file; exits 1 when any
file has a problem. A folder stands for every result JSON under it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("validate", help="check result files: schema, names, per-exit lengths, ranges, FLOPs, "
                                        "threat model")
    p.add_argument("files", nargs="+", metavar="FILE", help="result JSON files (or folders of them)")
    p.add_argument("--quiet", action="store_true", help="print problems only")
    p.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    from ..errors import check
    from ..leaderboard.aggregate import result_files
    from ..leaderboard.validate import check_file

    for arg in args.files:  # an empty folder is a mistake (a wrong path), not "0 of 0 valid"
        check(not Path(arg).is_dir() or bool(result_files([arg])),
              f"no result files in {arg}; pass a folder holding result JSON files, or the files themselves")
    bad = 0
    files = result_files(args.files)
    for path in files:
        _, problems = check_file(path)
        for line in problems:
            print(line)
        if problems:
            bad += 1
        elif not args.quiet:
            print(f"ok {path}")
    print(f"{len(files) - bad} of {len(files)} result files valid")
    return 1 if bad else 0
