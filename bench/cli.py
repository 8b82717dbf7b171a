"""The ``neokd-bench`` command line: the parser, the help a user reads, and one-line errors.

Each command's options live in ``bench/commands/<name>.py`` (``add_parser(subparsers)``, which sets ``func``);
what the command is for, as ``neokd-bench --help`` and ``neokd-bench COMMAND --help`` show it, is the table
:data:`COMMANDS` here, so the help reads as one text. Errors a user can fix (:class:`UsageError`) print one
line and exit with code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from typing import Any

from .errors import TrainingDivergedError, UsageError

DESCRIPTION = """\
neokd-bench measures how robust multi-exit (early-exit) neural networks are to adversarial examples. It
trains a defense (NEO-KD, NeurIPS 2023, and the paper's baselines) on a dataset with one shared trainer,
attacks every exit, and writes one JSON result per run: clean and adversarial accuracy per exit, accuracy
against a FLOPs budget, and how attacks on one exit transfer to the others. A static leaderboard is built
from result files alone."""

EPILOG = """\
first steps:
  neokd-bench list defenses                                               what is registered
  neokd-bench run --defense neokd --dataset fashion-mnist --preset smoke  train + evaluate (CPU minutes)
  neokd-bench compare runs/neokd-fashion-mnist-smoke-s0/result.json \\
      leaderboard/results/fashion-mnist-smoke/adv-s0.json                 against adversarial training (adv)
  neokd-bench leaderboard build --out site                                the board, as static HTML

`neokd-bench COMMAND --help` lists a command's options. A wrong name or value prints one line saying what to
type instead and exits with code 2."""

#: command -> (one line for the command list, what `neokd-bench COMMAND --help` says above the options)
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("show what can be used: models, datasets, attacks, defenses, exit policies",
             "Show what is registered, built-ins and installed plugins alike, with a line on each. Models show "
             "their exits, parameters and MFLOPs up to each exit."),
    "run": ("train a defense on a dataset, evaluate it, write runs/<name>/result.json",
            "Train a defense on a dataset with a preset's protocol (paper: the paper's; smoke: minutes on a CPU), "
            "then evaluate the final weights (clean and adversarial accuracy per exit, budgeted accuracy, "
            "transferability) and write checkpoint.pt and result.json in the run folder."),
    "eval": ("evaluate a saved checkpoint again, with other attacks or metrics",
             "Evaluate a checkpoint written by `run`: the attacks and metrics you name (anytime, budgeted, "
             "transfer, and beyond the paper efficiency, calibration, latency), written as a result file."),
    "compare": ("compare result files: accuracy per exit and the FLOPs each needs for a target accuracy",
                "Compare two or more result files: top-1 accuracy per exit, clean and under attack, and the mean "
                "MFLOPs each needs to reach a target accuracy on a budgeted curve (--target; default the "
                "smallest best accuracy among the files), with the saving of the first over each other one."),
    "masking": ("check a checkpoint for gradient masking (a robustness number too good to be true)",
                "Run the usual gradient-masking checks on a checkpoint: accuracy falls as eps grows, reaches "
                "zero at a large eps, more steps do not help it, white-box beats black-box, gradients are "
                "not zero."),
    "validate": ("check result files against the schema and for consistency",
                 "Check result files: the versioned JSON schema, per-exit lengths, ranges, FLOPs and the "
                 "threat model. One line per problem; exit code 1 when there is any."),
    "check": ("regression gate: a fresh result against a reference; the attacks against a fixed checkpoint",
              "The gate CI runs: a fresh result must not fall below the committed reference by more than the "
              "seed spread and test-set size allow; with --attack-gate, a committed checkpoint attacked at a "
              "fixed seed must not become more robust (an attack that weakened)."),
    "leaderboard": ("build the leaderboard: a static site from result files (no torch, offline)",
                    "Build the leaderboard from result files: one table per dataset, preset and attack, ties "
                    "where a lead is not significant over the training seeds, and a page per dataset and per "
                    "entry. It never runs a model or a submission."),
    "reproduce": ("reproduce a table or figure of the paper as a grid of runs (local or Slurm)",
                  "Run one table or figure of the paper as a grid of `neokd-bench run`s, locally or as a Slurm "
                  "job array, and write it in the paper's layout beside the reported numbers."),
    "verify": ("check a result against its checkpoint: same sha256, same numbers when evaluated again",
               "Check that a result's numbers came from its weights: the checkpoint's sha256 must match the "
               "result, then the recorded per-exit evaluation runs again (same seeds, samples, threads) and "
               "every number must agree within one test sample. Writes a verification record beside the "
               "result; the board marks such entries verified."),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's default is usage + 2)
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


class _Commands:
    """The sub-parsers action as a command module sees it: its own help is replaced by :data:`COMMANDS`."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub

    def add_parser(self, name: str, **kw: Any) -> argparse.ArgumentParser:
        short, long = COMMANDS[name]
        kw.update(help=short, description=long)
        return self._sub.add_parser(name, **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="neokd-bench", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strict", action="store_true",
                        help="a plugin that fails to load is an error (default: warn and skip it)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", parser_class=_Parser)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"neokd_bench.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("neokd_bench.commands"):
                continue
            raise
        mod.add_parser(_Commands(sub))
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
        flag = {"reproduce": "--runs-dir or --board", "masking": "--json",
                "compare": "--plot"}.get(args.command, "--out")
        print(f"error: {exc.strerror or _one_line(exc)}{where}; free space or choose another {flag}", file=sys.stderr)
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
