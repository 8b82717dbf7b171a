"""`neokd-bench reproduce TABLE`: run one table of the paper as a grid of `neokd-bench run`s, then write it.

    neokd-bench reproduce table2 --dry-run                  # the CIFAR-10 grid, its result files and cost
    neokd-bench reproduce cpu --jobs 2                      # the CPU reproduction (bundled Fashion-MNIST)
    neokd-bench reproduce table6 --dataset fashion-mnist --preset smoke --seeds 0,1,2
    neokd-bench reproduce table3 --executor slurm --partition gpu --gpus-per-job 4 --time-min 2880

The grids (tables 1-8, figures 2-4, A1-A4, cpu) are data in ``neokd_bench.reproduce.grids``. Each run is
``neokd-bench run --defense D --dataset DS --preset P --seed S --out <runs-dir>/<D>-<DS>-<P>-s<S> --quiet``
(``--resume`` when its folder has a checkpoint); a run whose result file exists is skipped, so running the
command again after a kill continues where it stopped (at most the epoch in progress of each run is lost).
After the runs: ``<runs-dir>/TABLE.md`` in the paper's layout, and the results copied to
``leaderboard/results/<dataset>-<preset>/`` with their summary (``--board``; ``--no-board`` to skip).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError, check
from .leaderboard import DEFAULT_RESULTS


def add_parser(sub: Any) -> None:
    p = sub.add_parser("reproduce", help="run a table of the paper as a grid of runs (local or Slurm), then "
                                         "write it in the paper's layout")
    p.add_argument("table", metavar="TABLE", help="table1..table8, figure2..figure4, a1..a4, or cpu "
                                                  "(the CPU reproduction on the bundled Fashion-MNIST)")
    p.add_argument("--dataset", help="run the table's grid on another dataset, e.g. fashion-mnist")
    p.add_argument("--preset", help="training preset of every run (default: the table's, e.g. paper)")
    p.add_argument("--seeds", help="comma-separated training seeds of every defense (default: the table's)")
    p.add_argument("--defenses", help="comma-separated subset of the table's rows (default: all)")
    p.add_argument("--executor", choices=["local", "slurm"], default="local")
    p.add_argument("--jobs", type=int, default=1, help="local: runs side by side, each with cores // N threads")
    p.add_argument("--runs-dir", help="folder of the run folders (default runs/reproduce/<table>)")
    p.add_argument("--dry-run", action="store_true", help="print the runs, their result files and cost; run nothing")
    p.add_argument("--report-only", action="store_true",
                   help="write the table and copy the finished results to the board now; start no run (for a grid "
                        "still running elsewhere)")
    p.add_argument("--board", help="leaderboard folder the results are copied to "
                                   "(default leaderboard/results/<dataset>-<preset>)")
    p.add_argument("--no-board", action="store_true", help="do not copy the results to the leaderboard")
    p.add_argument("--run-arg", action="append", default=[], metavar="ARG",
                   help="one more option for every `neokd-bench run`, e.g. --run-arg=--train-limit=64 (repeatable)")
    p.add_argument("--device", default="cpu", help="--dry-run: device the throughput is measured on")
    s = p.add_argument_group("slurm (flags override --slurm-config)")
    s.add_argument("--slurm-config", metavar="FILE", help="TOML or JSON with partition, gpus_per_job, time_min, "
                                                          "cpus_per_job, mem_gb, array_parallelism, account, ...")
    s.add_argument("--partition")
    s.add_argument("--gpus-per-job", type=int, help="GPUs of one run; more than 1 runs it under torchrun")
    s.add_argument("--time-min", type=int, help="time limit of one run, minutes")
    s.add_argument("--cpus-per-job", type=int)
    s.add_argument("--mem-gb", type=int)
    s.add_argument("--slurm-cluster", choices=["slurm", "local", "debug"], default="slurm",
                   help="submitit cluster: slurm, or local / debug to run the same jobs without Slurm")
    s.add_argument("--print-sbatch", action="store_true", help="print the sbatch script and submit nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.options import parse_ints
    from ..presets import train_preset
    from ..reproduce.grids import get_grid, plan

    defenses = tuple(d.strip() for d in args.defenses.split(",") if d.strip()) if args.defenses else None
    grid = get_grid(args.table, args.dataset, args.preset, parse_ints(args.seeds, "--seeds"), defenses)
    train_preset(grid.dataset, grid.preset)  # an unknown (dataset, preset) fails now, with what to type
    check(args.jobs >= 1, f"--jobs must be at least 1, got {args.jobs}; e.g. --jobs 2")
    check_run_args(args.run_arg)
    runs_dir = Path(args.runs_dir) if args.runs_dir else Path("runs") / "reproduce" / grid.name
    plans_only = args.dry_run or (args.executor == "slurm" and args.print_sbatch and not args.report_only)
    _check_folder_arg(runs_dir, "--runs-dir", probe=not plans_only)
    if not args.no_board and args.board:
        _check_folder_arg(Path(args.board), "--board", probe=not plans_only)
    runs = plan(grid, runs_dir, tuple(args.run_arg))
    _check_run_argv(runs[0].argv(False)[1:])  # the grid's options and --run-arg, as `run` reads them
    if args.dry_run:
        return _dry_run(grid, runs, args.device, args.jobs)
    if args.report_only:
        _publish(args, grid, runs, runs_dir)
        return 0
    if args.executor == "slurm":
        return _slurm(args, grid, runs, runs_dir)
    from ..reproduce.executors import run_local

    codes = run_local(runs, args.jobs)
    failed = sorted(n for n, c in codes.items() if c != 0)
    _publish(args, grid, runs, runs_dir)
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}; see {runs_dir / 'logs'}; rerun the same "
              f"command to resume them", file=sys.stderr)
        return 1
    return 0


#: `run` options that the grid sets for every run (and --help) -> what to type instead.
GRID_OPTIONS = {"--defense": "use reproduce's --defenses instead", "--dataset": "use reproduce's --dataset instead",
                "--preset": "use reproduce's --preset instead", "--seed": "use reproduce's --seeds instead",
                "--out": "use reproduce's --runs-dir instead",
                "--resume": "drop it: rerunning the same command resumes every run",
                "--train-attack": "drop it: the table fixes its training attack",
                "--help": "type `neokd-bench run --help` instead"}


def _run_option_strings() -> list[str]:
    from .run import add_parser as add_run

    sub = argparse.ArgumentParser(prog="neokd-bench").add_subparsers()
    add_run(sub)
    return sorted(sub.choices["run"]._option_string_actions)


def check_run_args(run_args: list[str]) -> None:
    """No ``--run-arg`` sets what the grid sets (:data:`GRID_OPTIONS`): not as ``--x=v``, ``--x v`` nor as a
    prefix that argparse would expand to it; none holds a control character (a newline would start a line of its
    own in an sbatch script). One line naming the grid's option otherwise."""
    options = _run_option_strings()
    aliases = {"-h": "--help"}
    for arg in run_args:
        if not isinstance(arg, str) or arg == "--":  # argparse hands `--run-arg=--` over as an empty list
            raise UsageError("--run-arg=-- would end the options of every run; pass options, e.g. "
                             "--run-arg=--train-limit=64")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in arg):
            raise UsageError(f"--run-arg {arg!r} holds a control character (a newline?); pass one plain option "
                             f"per --run-arg, e.g. --run-arg=--train-limit=64")
        if not arg.startswith("-") or arg == "-" or arg[1:2].isdigit():
            continue  # a value (of the option before it)
        name = arg.split("=", 1)[0]
        if name in aliases:
            resolved = aliases[name]
        elif name in options:
            resolved = name
        else:  # argparse expands an unambiguous prefix of a long option (allow_abbrev)
            hits = [o for o in options if o.startswith(name) and o.startswith("--")] if name.startswith("--") else []
            resolved = hits[0] if len(hits) == 1 else None
            if len(hits) > 1 and any(h in GRID_OPTIONS for h in hits):
                raise UsageError(f"--run-arg {arg!r}: {name} could mean {', '.join(hits)}, and the grid sets "
                                 f"{', '.join(h for h in hits if h in GRID_OPTIONS)}; write an option in full")
        if resolved in GRID_OPTIONS:
            raise UsageError(f"--run-arg {arg!r}: {resolved} is set by the grid for every run; "
                             f"{GRID_OPTIONS[resolved]}")


def _check_run_argv(argv: list[str]) -> None:
    """Parse a run's command line with `run`'s own parser now: an unknown option, a bad value type or an
    ambiguous prefix in ``--run-arg`` is one line before any run starts, not N failed runs."""
    from .run import add_parser as add_run

    class _Strict(argparse.ArgumentParser):
        def error(self, message: str) -> None:
            raise UsageError(f"--run-arg: `neokd-bench run` would refuse it: {message}; "
                             f"see `neokd-bench run --help`")

    sub = _Strict(prog="neokd-bench").add_subparsers(parser_class=_Strict)
    add_run(sub)
    sub.choices["run"].parse_args(argv)


def _check_folder_arg(path: Path, flag: str, probe: bool) -> None:
    """``path`` can be the folder of ``flag``: not a file, nothing under a file, no control character; with
    ``probe``, writable too (``--dry-run`` and ``--print-sbatch`` only print: a cluster path need not exist)."""
    from ..utils import check_output_dir

    text = str(path)
    check(not any(ord(ch) < 32 or ord(ch) == 127 for ch in text),
          f"{flag} {text!r} holds a control character (a newline?); choose a plain folder path with {flag}")
    if probe:
        check_output_dir(path, flag)
    else:
        p = path
        while not p.exists() and p.parent != p:
            p = p.parent
        check(not p.exists() or p.is_dir(),
              f"{flag} {path} {'is a file' if p == path else f'lies under {p}, which is a file'}; "
              f"give a folder path with {flag}")


def _publish(args: argparse.Namespace, grid, runs, runs_dir: Path) -> None:
    from ..reproduce.report import publish

    board = None
    if not args.no_board:
        results = DEFAULT_RESULTS if DEFAULT_RESULTS.is_dir() else Path("leaderboard") / "results"  # a checkout's
        board = Path(args.board) if args.board else results / f"{grid.dataset}-{grid.preset}"
    title = args.board or f"leaderboard/results/{grid.dataset}-{grid.preset}"
    done = sum(r.result.is_file() for r in runs)
    for path in publish(grid, runs, runs_dir, board, title):
        print(f"wrote {path}")
    print(f"{done}/{len(runs)} runs finished")


def _slurm(args: argparse.Namespace, grid, runs, runs_dir: Path) -> int:
    from ..reproduce.executors import load_slurm_options, sbatch_script, submit

    opts = load_slurm_options(args.slurm_config, partition=args.partition, gpus_per_job=args.gpus_per_job,
                              time_min=args.time_min, cpus_per_job=args.cpus_per_job, mem_gb=args.mem_gb)
    folder = runs_dir / "slurm"
    if args.print_sbatch:
        print(sbatch_script(runs, opts, folder))
        return 0
    try:
        jobs = submit(runs, opts, folder, args.slurm_cluster)
    except RuntimeError as exc:
        if "srun" in str(exc):
            raise UsageError("--executor slurm: no Slurm here (srun not found); use --executor local, "
                             "--slurm-cluster local, or --print-sbatch") from exc
        raise
    if not jobs:
        print("every run is done; nothing submitted")
        return 0
    print(f"submitted {len(jobs)} runs as job array {jobs[0].job_id.split('_')[0]}; logs in {folder}")
    if args.slurm_cluster == "slurm":
        print("when they finish, rerun this command to write the table (finished runs are skipped)")
    else:  # submitit's local / debug cluster: wait here, then write the table
        failed = []
        for job in jobs:
            try:
                job.result()
            except Exception as exc:  # a failed task: its run's log says why; the others still count
                failed.append(str(exc).strip().splitlines()[-1])
        _publish(args, grid, runs, runs_dir)
        if failed:
            print(f"{len(failed)} job(s) failed: " + "; ".join(failed), file=sys.stderr)
            return 1
    return 0


def _dry_run(grid, runs, device: str, jobs: int = 1) -> int:
    from ..reproduce.cost import measure
    from ..reproduce.executors import cores, is_done

    threads = max(1, cores() // jobs)  # what each run of `--jobs N` gets (the executor's rule)
    cost = measure(grid, device, threads=None if device.startswith("cuda") else threads)
    print(f"{grid.title}")
    print(f"dataset {grid.dataset}, preset {grid.preset}, model {cost.model}, {len(runs)} runs")
    for r in runs:
        state = "done" if is_done(r) else ("resume" if (r.folder / "checkpoint.pt").is_file() else "todo")
        print(f"  [{state}] neokd-bench {shlex.join(r.argv(False))}")
        for out in r.outputs():
            print(f"          -> {out}")
        if r.eval_result is not None:
            print(f"          then neokd-bench {shlex.join(r.eval_argv())}")
    todo = [r for r in runs if not is_done(r)]
    per_run = cost.seconds_per_run
    print(f"cost: {cost.flops / 1e6:.2f} MFLOPs per forward pass (fvcore) x "
          f"{(cost.train_passes + cost.eval_passes) / 1e6:.1f} M passes per run "
          f"({cost.train_passes / 1e6:.1f} M training, {cost.eval_passes / 1e6:.1f} M evaluation)")
    print(f"timed now ({cost.device}): training {cost.train_images_per_s:.1f} images/s ({cost.defense}, real "
          f"training steps of batch {cost.train_batch}) -> {cost.train_s / 3600:.2f} h; evaluation from one batch of "
          f"{cost.eval_batch} test images -> {cost.eval_s / 3600:.2f} h")
    idle = cost.train_s_idle + cost.eval_s_idle
    waves = -(-len(todo) // jobs)  # runs side by side, jobs at a time
    side = "one at a time" if jobs == 1 else f"{jobs} side by side, {threads} torch thread(s) each"
    print(f"estimate: {per_run / 3600:.2f} h per run at this moment's load ({idle / 3600:.2f} h on an idle machine: "
          f"CPU time over torch threads), {waves * per_run / 3600:.1f} h ({waves * idle / 3600:.1f} h idle) "
          f"for the {len(todo)} runs not done, on this device {side}")
    return 0
