"""Every table of the paper as a grid of runs, as data in one place (no torch).

A :class:`Grid` names the paper's table or figure, its dataset and preset, its rows (a registered defense
each, with the paper's row label), the attacks of its columns (result labels such as ``pgd:average``), what
it measures (``anytime`` adversarial accuracy per exit, ``clean`` accuracy, ``budgeted`` curves or
``transfer`` maps), the training attack, the training seeds (the paper trains 5), and where its reported
numbers live in ``leaderboard/reported/`` (``(table, part)`` per attack). :func:`plan` turns a grid into
:class:`Run` s: one ``neokd-bench run`` each, in one folder ``<runs-dir>/<defense>-<dataset>-<preset>-s<seed>``,
plus a ``neokd-bench eval`` of its checkpoint where the table needs attacks beyond the preset's PGD (Table 8).

Exits are 0-based in configs and 1-based in the paper's columns. Rows follow the paper's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import UsageError

PAPER_SEEDS = (0, 1, 2, 3, 4)  # the paper trains 5 seeds (App. A.2)
MAX_AVERAGE, AVERAGE = "pgd:max-average", "pgd:average"

#: Paper row labels of the registered defenses (the tables' first column).
ROW_LABELS: dict[str, str] = {
    "adv": "Adv. w/o Distill [12]", "skd": "SKD [24]", "ard": "ARD [8]", "lw": "LW [3]",
    "neokd": "NEO-KD (ours)", "nkd": "NKD", "eokd": "EOKD", "pgd-te": "PGD-TE [7]", "trades-te": "TRADES-TE [7]",
    "nkd-no-ensemble": "No ensembling", "nkd-ensemble-all": "Ensemble all exits",
    "skd-exit0": "SKD (exit 1)", "skd-exit1": "SKD (exit 2)", "skd-exit2": "SKD (exit 3)",
    "skd-ensemble": "SKD (ensemble)", "ard-exit0": "ARD (exit 1)", "ard-exit1": "ARD (exit 2)",
    "ard-exit2": "ARD (exit 3)", "ard-ensemble": "ARD (ensemble)",
}

#: Exits of the paper's network per dataset (Sec. 4: SmallCNN 3, MSDNet 3 / 7 / 5 / 5).
EXITS: dict[str, int] = {"mnist": 3, "fashion-mnist": 3, "cifar10": 3, "cifar100": 7, "tiny-imagenet": 5,
                         "imagenet": 5}

#: (train, test) images of each full dataset, for the cost estimate of ``--dry-run`` only. The bundled
#: Fashion-MNIST subset (10,000 / 2,000) is what the ``smoke`` and ``cpu`` presets read.
SIZES: dict[str, tuple[int, int]] = {
    "mnist": (60000, 10000), "fashion-mnist": (10000, 2000), "cifar10": (50000, 10000),
    "cifar100": (50000, 10000), "tiny-imagenet": (100000, 10000), "imagenet": (1281167, 50000),
}

_MAIN = ("adv", "skd", "ard", "lw", "neokd")


@dataclass(frozen=True)
class Grid:
    """One table or figure of the paper as runs: defenses x seeds, on one dataset and preset."""

    name: str
    title: str
    dataset: str
    defenses: tuple[str, ...]
    attacks: tuple[str, ...]  # result labels of the columns (``pgd:max-average``); () for clean accuracy
    metric: str = "anytime"  # anytime | clean | budgeted | transfer
    preset: str = "paper"
    seeds: tuple[int, ...] = PAPER_SEEDS
    train_attack: str = "max-average"
    reported: tuple[tuple[str, str], ...] = ()  # (table, part) per attack in leaderboard/reported/
    eval_attacks: tuple[str, ...] = ()  # attacks run by `neokd-bench eval` after training (Table 8)
    eval_args: tuple[str, ...] = ()  # extra `eval` options, e.g. ("--steps", "100")
    first: tuple[str, ...] = ()  # defenses whose runs come first in each seed (results useful early)
    late_seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)  # defense -> its seeds, if fewer
    note: str = ""

    @property
    def num_exits(self) -> int:
        return EXITS[self.dataset]

    def seeds_of(self, defense: str) -> tuple[int, ...]:
        return self.late_seeds.get(defense, self.seeds)

    def rows(self) -> list[tuple[str, str]]:
        """(defense, paper row label) in the paper's order."""
        return [(d, ROW_LABELS.get(d, d)) for d in self.defenses]


def _anytime(n: str, ds: str, title: str, defenses: tuple[str, ...] = _MAIN) -> Grid:
    return Grid(n, f"Table {n[5:]}: anytime prediction, adversarial test accuracy on {title}", ds, defenses,
                (MAX_AVERAGE, AVERAGE), reported=((n[5:], "a"), (n[5:], "b")))


GRIDS: dict[str, Grid] = {g.name: g for g in (
    _anytime("table1", "mnist", "MNIST"),
    _anytime("table2", "cifar10", "CIFAR-10"),
    _anytime("table3", "cifar100", "CIFAR-100"),
    _anytime("table4", "tiny-imagenet", "Tiny-ImageNet"),
    _anytime("table5", "imagenet", "ImageNet", ("adv", "skd", "ard", "neokd")),  # no LW row in Table 5
    Grid("figure2", "Figure 2: budgeted prediction under the average attack (LW left out, as in the paper)",
         "cifar10", ("adv", "skd", "ard", "neokd"), (AVERAGE,), metric="budgeted",
         note="the paper plots CIFAR-10, CIFAR-100 and Tiny-ImageNet; run the others with --dataset"),
    Grid("figure3", "Figure 3: budgeted prediction under the max-average attack (LW left out, as in the paper)",
         "cifar10", ("adv", "skd", "ard", "neokd"), (MAX_AVERAGE,), metric="budgeted",
         note="the paper plots CIFAR-10, CIFAR-100 and Tiny-ImageNet; run the others with --dataset"),
    Grid("figure4", "Figure 4: adversarial transferability map on CIFAR-100 (PGD-50 single-exit attacks)",
         "cifar100", ("adv", "skd", "nkd", "neokd"), (), metric="transfer"),
    Grid("table6", "Table 6: effect of each component of NEO-KD, average attack on CIFAR-10", "cifar10",
         ("adv", "nkd", "eokd", "neokd"), (AVERAGE,), reported=(("6", "a"),)),
    Grid("table7", "Table 7: type of ensembles in NKD, average attack on CIFAR-10", "cifar10",
         ("adv", "nkd-no-ensemble", "neokd", "nkd-ensemble-all"), (AVERAGE,), reported=(("7", "a"),)),
    Grid("table8", "Table 8: stronger attacks (PGD-100, CW, AutoAttack), average attack on CIFAR-100; "
                   "models trained with the average attack", "cifar100", ("adv", "neokd"),
         ("pgd:average", "cw:average", "autoattack:average"), train_attack="average",
         reported=(("8", "a"), ("8", "b"), ("8", "c")),
         eval_attacks=("pgd:average", "cw:average", "autoattack:average"),
         eval_args=("--steps", "100", "--metrics", "anytime"),
         note="App. H: eps 0.03, 50 steps for CW and AutoAttack; the paper counts a sample adversarial only if "
              "every exit is fooled (attack option not_fooled=clean); PGD-100 is `eval --steps 100` "
              "(its column reads eval.json's pgd:average)"),
    Grid("a1", "Table A1: clean test accuracy, anytime prediction (MNIST; Tiny-ImageNet with --dataset)",
         "mnist", ("adv", "neokd"), (), metric="clean", reported=(("A1", "a"),)),
    Grid("a2", "Table A2: adversarial training via the average attack, CIFAR-100", "cifar100", _MAIN,
         (MAX_AVERAGE, AVERAGE), train_attack="average", reported=(("A2", "a"), ("A2", "b"))),
    Grid("a3", "Table A3: TEAT against NEO-KD, max-average attack, CIFAR-10 (CIFAR-100 with --dataset)",
         "cifar10", ("pgd-te", "trades-te", "neokd"), (MAX_AVERAGE,), reported=(("A3", "a"),)),
    Grid("a4", "Table A4: teacher exit of SKD and ARD, average attack on CIFAR-10", "cifar10",
         ("skd-exit0", "skd-exit1", "skd-exit2", "skd-ensemble", "ard-exit0", "ard-exit1", "ard-exit2",
          "ard-ensemble", "neokd"), (AVERAGE,), reported=(("A4", "a"),)),
    # The reproduction this project's 2-core CPU can run: the `cpu` preset on the bundled
    # Fashion-MNIST. adv and NEO-KD with 5 seeds, the NKD / EOKD ablation with 3; the adv/neokd pair of a
    # seed first, then nkd/eokd of the same seed, so that results are useful early. Reported numbers are
    # those of CIFAR-10 (Tables 2a and 6): the layout, not the values, is comparable.
    Grid("cpu", "CPU reproduction: Tables 2 and 6 on the bundled Fashion-MNIST (preset cpu)", "fashion-mnist",
         ("adv", "nkd", "eokd", "neokd"), (MAX_AVERAGE, AVERAGE), preset="cpu",
         reported=(("2", "a"), ("6", "a")), first=("adv", "neokd"),
         late_seeds={"nkd": (0, 1, 2), "eokd": (0, 1, 2)}),
)}


@dataclass(frozen=True)
class Run:
    """One training run of a grid: the `neokd-bench run` command line (without the interpreter), its folder,
    and the result files it must leave behind."""

    defense: str
    dataset: str
    preset: str
    seed: int
    folder: Path
    run_args: tuple[str, ...]
    eval_args: tuple[str, ...] = ()  # a `neokd-bench eval` after training, when the table needs one

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def result(self) -> Path:
        return self.folder / "result.json"

    @property
    def eval_result(self) -> Path | None:
        return self.folder / "eval.json" if self.eval_args else None

    def outputs(self) -> list[Path]:
        return [p for p in (self.result, self.eval_result) if p is not None]

    def argv(self, resume: bool) -> list[str]:
        return ["run", *self.run_args, *(["--resume"] if resume else [])]

    def eval_argv(self) -> list[str]:
        return ["eval", str(self.folder / "checkpoint.pt"), *self.eval_args, "--out", str(self.eval_result),
                "--quiet"]


def get_grid(name: str, dataset: str | None = None, preset: str | None = None,
             seeds: tuple[int, ...] | None = None, defenses: tuple[str, ...] | None = None) -> Grid:
    """The grid named ``name`` (``table2``, ``figure4``, ``a1``, ``cpu``), optionally on another dataset,
    preset or set of seeds (``--seeds`` replaces every defense's seeds), or with only some of its rows."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in GRIDS:
        raise UsageError(f"unknown table {name!r}; use one of {', '.join(GRIDS)} (e.g. `reproduce table2 --dry-run`)")
    g = GRIDS[key]
    if dataset is not None and dataset not in EXITS:
        raise UsageError(f"unknown --dataset {dataset!r}; use one of {', '.join(EXITS)}")
    changes: dict = {k: v for k, v in (("dataset", dataset), ("preset", preset)) if v is not None}
    if seeds is not None:
        changes.update(seeds=tuple(seeds), late_seeds={})
    if defenses is not None:
        unknown = [d for d in defenses if d not in g.defenses]
        if unknown or not defenses:
            raise UsageError(f"--defenses {','.join(defenses)}: {g.name} has rows {','.join(g.defenses)}; "
                             f"pick among them, e.g. --defenses {','.join(g.defenses[:2])}")
        changes["defenses"] = tuple(d for d in g.defenses if d in defenses)
    return replace(g, **changes) if changes else g


def order(grid: Grid) -> list[tuple[str, int]]:
    """(defense, seed) pairs: seed by seed, the ``first`` defenses of a seed before the others."""
    seeds = sorted({s for d in grid.defenses for s in grid.seeds_of(d)})
    ranked = [d for d in grid.first if d in grid.defenses] + [d for d in grid.defenses if d not in grid.first]
    return [(d, s) for s in seeds for d in ranked if s in grid.seeds_of(d)]


def plan(grid: Grid, runs_dir: str | Path, extra: tuple[str, ...] = ()) -> list[Run]:
    """The grid's runs in execution order. ``extra`` are more `run` options (e.g. ``--train-limit 64``)."""
    runs_dir = Path(runs_dir)
    out = []
    for d, s in order(grid):
        folder = runs_dir / f"{d}-{grid.dataset}-{grid.preset}-s{s}"
        args = ("--defense", d, "--dataset", grid.dataset, "--preset", grid.preset, "--seed", str(s),
                "--out", str(folder), "--quiet")
        if grid.train_attack != "max-average":
            args += ("--train-attack", grid.train_attack)
        ev = (("--attacks", ",".join(grid.eval_attacks), *grid.eval_args) if grid.eval_attacks else ())
        out.append(Run(d, grid.dataset, grid.preset, s, folder, args + tuple(extra), ev))
    return out
