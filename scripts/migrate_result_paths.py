"""One-off: strip machine paths from committed result files (numbers unchanged).

    python scripts/migrate_result_paths.py leaderboard/results/fashion-mnist-smoke/*.json

Rewrites ``dataset.path`` and ``training.checkpoint`` to their file names (what
:func:`neokd_bench.results.portable_paths` now does on every write) and leaves every other byte's meaning alone.
"""

from __future__ import annotations

import json
import sys

from neokd_bench.results import dumps_result, portable_paths, write_result


def main(paths: list[str]) -> int:
    for p in paths:
        with open(p, encoding="utf-8") as fh:
            doc = json.load(fh)
        before = dumps_result(doc)
        doc = portable_paths(doc)
        if dumps_result(doc) != before:
            write_result(p, doc)
            print(f"{p}: paths made portable")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
