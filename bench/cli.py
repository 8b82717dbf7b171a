"""`neokd-bench` command line. Each sub-command lives in ``neokd_bench.commands.<name>`` and exposes
``add_parser(subparsers)`` which sets ``func`` on its parser.

Errors a user can fix (:class:`UsageError`) print one line and exit with code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from .errors import TrainingDivergedError, UsageError

COMMANDS = ("list", "run", "eval", "compare", "masking", "validate", "check", "leaderboard", "reproduce", "verify")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's default is usage + 2)
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="neokd-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true",
                        help="a plugin that fails to load is an error (default: warn and skip)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"neokd_bench.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("neokd_bench.commands"):
                continue
            raise
        mod.add_parser(sub)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.strict:
        os.environ["NEOKD_STRICT_PLUGINS"] = "1"
    if not getattr(args, "func", None):
        print(f"error: no command given; use one of {', '.join(COMMANDS)}, e.g. `neokd-bench list` "
              f"(see `neokd-bench --help`)", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    try:
        rc = args.func(args)
    except UsageError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system said no (disk full, permissions): not a bug, one line
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or _one_line(exc)}{where}; free space or choose another --out", file=sys.stderr)
        return 2
    except TrainingDivergedError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return TrainingDivergedError.exit_code
    except KeyboardInterrupt:
        print("interrupted; the last complete checkpoint is kept (use --resume)", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
