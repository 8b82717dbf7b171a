"""Running a grid: N runs at a time on this machine, or a Slurm job array through submitit.

Both executors run each :class:`~.grids.Run` with :func:`execute`, so the work of one run is the same
everywhere: skip it when its result files exist; otherwise ``neokd-bench run ...`` (with ``--resume`` when its
folder holds a checkpoint: killing the grid loses at most the epoch in progress), then ``neokd-bench eval``
when the table needs more attacks. Every start and end goes to ``<runs-dir>/reproduce.log`` (one line each,
appended), which is how a test checks that no run is done twice.

* ``local``: ``--jobs N`` runs side by side, each child with ``cores // N`` threads (``OMP_NUM_THREADS``
  and torch's intra-op threads).
* ``slurm``: one job array (``submitit.AutoExecutor.map_array``), a task per run not yet done. Each task is
  :func:`execute`, i.e. ``neokd-bench run``; with ``gpus_per_job > 1`` under ``torchrun``. Options come from
  flags or a small TOML/JSON file (:data:`SLURM_KEYS`). submitit's ``local`` and ``debug`` clusters run the
  same path without Slurm.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..safe_io import load_json, load_toml
from .grids import Run

LOG_NAME = "reproduce.log"
LOCK_NAME = ".reproduce.lock"
CHECKPOINT = "checkpoint.pt"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def is_done(run: Run) -> bool:
    """A run is done when every result file it writes exists and parses as a JSON object."""
    for path in run.outputs():
        try:
            doc = load_json(path, "result file")
        except UsageError:  # missing, not a regular file, truncated: not done
            return False
        if not isinstance(doc, dict) or "evaluation" not in doc:
            return False
    return True


def _log(runs_dir: Path, text: str) -> None:
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / LOG_NAME, "a", encoding="utf-8") as fh:  # one short line per write: append is atomic
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")


def cli_prefix(nproc: int = 1) -> list[str]:
    """How a child calls neokd-bench: this interpreter (the same environment), under torchrun for nproc > 1."""
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "neokd_bench.cli"]
    return [sys.executable, "-m", "neokd_bench.cli"]


def execute(run: Run, threads: int | None = None, nproc: int = 1) -> int:
    """Run one grid entry to completion (or resume it); returns the exit code (0 when already done)."""
    runs_dir = run.folder.parent
    if is_done(run):
        return 0
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log_dir = runs_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    rc = 0
    with open(log_dir / f"{run.name}.log", "a", encoding="utf-8") as out:
        if not run.result.is_file():
            resume = (run.folder / CHECKPOINT).is_file()
            _log(runs_dir, f"start {run.name} resume={int(resume)}")
            rc = subprocess.run(cli_prefix(nproc) + run.argv(resume), env=env, stdout=out, stderr=subprocess.STDOUT,
                                check=False).returncode
        if rc == 0 and run.eval_result is not None and not run.eval_result.is_file():
            _log(runs_dir, f"eval {run.name}")
            rc = subprocess.run(cli_prefix() + run.eval_argv(), env=env, stdout=out, stderr=subprocess.STDOUT,
                                check=False).returncode
    _log(runs_dir, f"{'done' if rc == 0 else f'failed rc={rc}'} {run.name}")
    return rc


@contextlib.contextmanager
def exclusive(runs_dir: Path) -> Iterator[None]:
    """Hold ``<runs-dir>/.reproduce.lock`` for the block: two grids on one folder would run a run twice."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / LOCK_NAME, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise UsageError(f"another `neokd-bench reproduce` is running on {runs_dir}; wait for it to end, or "
                             f"stop it first (a rerun resumes where it stopped)") from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_local(runs: Sequence[Run], jobs: int = 1) -> dict[str, int]:
    """Every run not yet done, ``jobs`` at a time, each with ``cores // jobs`` threads; name -> exit code."""
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}; e.g. --jobs 2")
    threads = max(1, cores() // jobs)
    todo = [r for r in runs if not is_done(r)]
    if not todo:
        return {}
    with exclusive(todo[0].folder.parent), ThreadPoolExecutor(max_workers=jobs) as pool:
        codes = list(pool.map(lambda r: execute(r, threads), todo))
    return {r.name: c for r, c in zip(todo, codes)}


# ---------------------------------------------------------------------------------------------------------
# Slurm through submitit
# ---------------------------------------------------------------------------------------------------------

#: Slurm options that a flag or the config file may set.
SLURM_KEYS = ("partition", "gpus_per_job", "time_min", "cpus_per_job", "mem_gb", "array_parallelism", "account",
              "qos", "constraint")


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_job: int = 1
    time_min: int = 24 * 60
    cpus_per_job: int = 8
    mem_gb: int | None = None
    array_parallelism: int = 64
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None

    def sbatch_parameters(self) -> dict[str, Any]:
        """submitit ``SlurmExecutor`` parameters: one task per job, on one node; unset ones left out."""
        params = {"partition": self.partition, "time": self.time_min, "gpus_per_node": self.gpus_per_job or None,
                  "cpus_per_task": self.cpus_per_job, "mem": f"{self.mem_gb}GB" if self.mem_gb else None,
                  "array_parallelism": self.array_parallelism, "account": self.account, "qos": self.qos,
                  "constraint": self.constraint, "nodes": 1, "ntasks_per_node": 1, "job_name": "neokd-reproduce"}
        return {k: v for k, v in params.items() if v is not None}

    def local_parameters(self) -> dict[str, Any]:
        """The same job for submitit's ``local`` / ``debug`` clusters (no Slurm-only option; GPUs only when
        some are visible, as the local cluster hands out visible GPUs)."""
        params: dict[str, Any] = {"timeout_min": self.time_min, "cpus_per_task": self.cpus_per_job, "nodes": 1,
                                  "tasks_per_node": 1, "name": "neokd-reproduce"}
        if os.environ.get("CUDA_VISIBLE_DEVICES") and self.gpus_per_job:
            params["gpus_per_node"] = self.gpus_per_job
        return params


#: Whole-number Slurm options and their least value (Slurm keeps them as 32-bit numbers).
SLURM_INTS = {"gpus_per_job": 0, "time_min": 1, "cpus_per_job": 1, "mem_gb": 1, "array_parallelism": 1}
#: A Slurm name (partition, account, qos) or constraint expression: no whitespace, quote, ``#``, ``$``, ``;``,
#: backslash or control character, so that a value stays one word of its ``#SBATCH`` line (a newline would start
#: a line of its own in the script, a space another option).
_SLURM_NAME = re.compile(r"[A-Za-z0-9_.,:+@/=-]{1,200}")
_EXAMPLES = {"partition": "gpu", "account": "lab", "qos": "normal", "constraint": "a100"}
_SLURM_CONSTRAINT = re.compile(r"[A-Za-z0-9_.,:+@/=&|*!()\[\]-]{1,200}")


def _check_slurm_value(key: str, value: Any, where: str) -> None:
    """One line naming ``where`` (``--partition`` or ``--slurm-config FILE: partition``) unless ``value`` fits."""
    if key in SLURM_INTS:
        low = SLURM_INTS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**31:
            raise UsageError(f"{where} must be a whole number in {low}..{2**31 - 1}, got {value!r}; "
                             f"e.g. {key} = {max(low, 1)}")
        return
    pattern = _SLURM_CONSTRAINT if key == "constraint" else _SLURM_NAME
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise UsageError(f"{where} must be one word of letters, digits and _.,:+@/=-"
                         f"{'&|*!()[]' if key == 'constraint' else ''} (no space, newline, quote or #), "
                         f"got {value!r}; e.g. {key} = \"{_EXAMPLES.get(key, 'gpu')}\"")


def load_slurm_options(config: str | Path | None, **flags: Any) -> SlurmOptions:
    """Options from a TOML or JSON file (keys of :data:`SLURM_KEYS`), then flags on top (None = unset). Every
    value is checked by type (:func:`_check_slurm_value`): none can add a line or an option to the sbatch
    script."""
    values: dict[str, Any] = {}
    if config is not None:
        path = Path(config)
        where = f"--slurm-config {path}"
        values = load_json(path, "--slurm-config") if path.suffix == ".json" else load_toml(path, "--slurm-config")
        values = values.get("slurm", values) if isinstance(values, dict) else values
        if not isinstance(values, dict):
            raise UsageError(f"{where}: expected a table of options, e.g. partition = \"gpu\"")
        unknown = sorted(set(values) - set(SLURM_KEYS))
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)[:200]}; "
                             f"use {', '.join(SLURM_KEYS)}")
        for key, value in values.items():
            _check_slurm_value(key, value, f"{where}: {key}")
    for key, value in flags.items():
        if value is not None:
            _check_slurm_value(key, value, f"--{key.replace('_', '-')}")
            values[key] = value
    return SlurmOptions(**values)


def task_lines(runs: Sequence[Run], nproc: int = 1) -> list[str]:
    """Comment lines for the sbatch script: what each array task runs (the task itself is :func:`execute`)."""
    prog = f"torchrun --nproc_per_node={nproc} -m neokd_bench.cli" if nproc > 1 else "neokd-bench"
    return [f"# task {i}: {prog} {shlex.join(r.argv(False))}" for i, r in enumerate(runs)]


def make_executor(folder: str | Path, options: SlurmOptions, cluster: str = "slurm", runs: Sequence[Run] = ()):
    """A submitit executor with the grid's options: Slurm's (``sbatch``), or the ``local`` / ``debug`` cluster
    of submitit, which runs the same tasks on this machine without Slurm."""
    if cluster != "slurm":
        import submitit

        executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        executor.update_parameters(**options.local_parameters())
        return executor
    from submitit.slurm.slurm import SlurmExecutor

    executor = SlurmExecutor(folder)
    executor.update_parameters(**options.sbatch_parameters(), setup=task_lines(runs, max(1, options.gpus_per_job)))
    return executor


def _task(run: Run, threads: int, nproc: int) -> int:
    """One array task; a failed run raises, so that submitit reports the task as failed."""
    rc = execute(run, threads=threads, nproc=nproc)
    if rc != 0:
        raise RuntimeError(f"{run.name}: neokd-bench exited with code {rc}; "
                           f"see {run.folder.parent / 'logs' / run.name}.log")
    return rc


def submit(runs: Sequence[Run], options: SlurmOptions, folder: str | Path, cluster: str = "slurm") -> list:
    """Submit every run not yet done as one job array; returns the submitit jobs (empty when all are done)."""
    todo = [r for r in runs if not is_done(r)]
    if not todo:
        return []
    executor = make_executor(folder, options, cluster, todo)
    nproc = max(1, options.gpus_per_job)
    threads = max(1, options.cpus_per_job // nproc)
    return executor.map_array(_task, todo, [threads] * len(todo), [nproc] * len(todo))


def sbatch_script(runs: Sequence[Run], options: SlurmOptions, folder: str | Path) -> str:
    """The sbatch script that :func:`submit` hands to Slurm for ``runs`` (an array of ``len(runs)`` tasks), made
    as submitit makes it for ``map_array``, on a machine without Slurm (``srun`` is not looked for)."""
    from submitit.slurm.slurm import SlurmExecutor

    class _NoCluster(SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:
            return 1

    executor = _NoCluster(folder)
    executor.update_parameters(**options.sbatch_parameters(), setup=task_lines(runs, max(1, options.gpus_per_job)))
    executor.parameters["map_count"] = len(runs)  # what SlurmExecutor does for an array
    return executor._make_submission_file_text(executor._submitit_command_str, "0")
