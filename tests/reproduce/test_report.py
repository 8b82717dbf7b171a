"""The paper-layout table and the board folder, from the committed smoke results (no training)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from neokd_bench.leaderboard.aggregate import diff_text
from neokd_bench.leaderboard.site import build
from neokd_bench.reproduce.grids import get_grid, plan
from neokd_bench.reproduce.report import paper_table, publish

SMOKE = Path(__file__).resolve().parents[2] / "leaderboard" / "results" / "fashion-mnist-smoke"
CPU = SMOKE.parent / "fashion-mnist-cpu"


@pytest.fixture
def smoke_runs(tmp_path):
    """Table 2's grid on the smoke preset, its run folders holding the committed smoke results."""
    grid = get_grid("table2", dataset="fashion-mnist", preset="smoke", seeds=(0, 1, 2))
    runs = plan(grid, tmp_path / "runs")
    for r in runs:
        r.folder.mkdir(parents=True)
        shutil.copyfile(SMOKE / f"{r.defense}-s{r.seed}.json", r.result)
    return grid, runs


@pytest.fixture
def cpu_table(tmp_path) -> str:
    """The CPU grid's table, its run folders holding the committed CPU results."""
    grid = get_grid("cpu")
    runs = plan(grid, tmp_path / "runs")
    for r in runs:
        r.folder.mkdir(parents=True)
        src = CPU / f"{r.defense}-s{r.seed}.json"
        if src.is_file():
            shutil.copyfile(src, r.result)
    return paper_table(grid, runs)


def _row(text: str, part: str, label: str, kind: str) -> list[str]:
    """The cells of one line of a part of the table (``kind`` is measured, reported, difference, vs adv)."""
    section = text.split(f"## ({part})")[1].split("\n## ")[0].splitlines()
    i = next(k for k, line in enumerate(section) if line.startswith(f"| {label} |"))
    line = next(x for x in section[i:] if x.split("|")[2].strip().startswith(kind))
    return [c.strip() for c in line.strip("|").split("|")][2:]


def test_measured_beside_reported_with_the_difference_and_the_interval(smoke_runs):
    grid, runs = smoke_runs
    text = paper_table(grid, runs)
    assert "not on fashion-mnist: compare the layout" in text  # Table 2 is CIFAR-10's
    measured = _row(text, "b", "NEO-KD (ours)", "measured (n=3)")
    reported = _row(text, "b", "NEO-KD (ours)", "reported")
    assert reported == ["41.67", "45.38", "45.54", "44.20"]  # Table 2(b), as printed
    docs = [json.loads((SMOKE / f"neokd-s{s}.json").read_text()) for s in (0, 1, 2)]
    exit1 = sum(d["evaluation"]["anytime"]["adversarial"]["pgd:average"]["top1"]["mean"][0] for d in docs) / 3
    assert measured[0].startswith(f"{100 * exit1:.2f} ± ")
    # Table 2 is CIFAR-10's: its numbers are shown for the layout only, never subtracted from Fashion-MNIST's
    assert "| | difference |" not in text and "(cifar10, layout only)" in text
    # the interval against adv is the leaderboard's own (summary.json of the same files)
    summary = json.loads((SMOKE / "summary.json").read_text())
    comp = next(c for t in summary["tables"] if t["attack"] == "pgd:average" for c in t["comparisons"]
                if (c["defense"], c["against"], c["exit"]) == ("neokd", "adv", "avg"))
    assert _row(text, "b", "NEO-KD (ours)", "vs adv")[-1] == diff_text(comp)
    table_b = text.split("\n## (b) ")[1]
    adv_rows = table_b.split("| Adv. w/o Distill [12] | measured (n=3) |")[1].split("| SKD [24] |")[0]
    assert "| reported (cifar10, layout only) |" in adv_rows and "vs adv" not in adv_rows  # not vs itself


def test_publish_writes_the_table_and_a_board_folder_the_site_accepts(smoke_runs, tmp_path):
    grid, runs = smoke_runs
    board = tmp_path / "board"
    written = publish(grid, runs, tmp_path / "runs", board, "leaderboard/results/fashion-mnist-smoke")
    assert tmp_path / "runs" / "TABLE.md" in written and (board / "table2.md").read_text().startswith("# Table 2")
    assert sorted(p.name for p in board.glob("*-s*.json")) == sorted(p.name for p in SMOKE.glob("*-s*.json"))
    # the summary is the leaderboard layer's: the same bytes as the committed one of the same files
    assert (board / "SUMMARY.md").read_bytes() == (SMOKE / "SUMMARY.md").read_bytes()
    info = build([board], tmp_path / "site")
    assert info["files"] == 15
    index = (tmp_path / "site" / "index.html").read_text()
    assert "fashion-mnist" in index and "±" in index  # intervals over seeds on the board


def test_a_grid_with_nothing_finished_writes_an_empty_table(tmp_path):
    grid = get_grid("table6")
    runs = plan(grid, tmp_path)
    text = paper_table(grid, runs)
    assert "| EOKD | measured (n=0) | n/a | n/a | n/a | n/a |" in text
    assert "| | reported | 37.26 | 41.10 | 38.68 | 39.01 |" in text
    assert publish(grid, runs, tmp_path, tmp_path / "board") == [tmp_path / "TABLE.md"]
    assert not (tmp_path / "board").exists()


def test_one_seed_claims_neither_a_spread_nor_a_tie(tmp_path):
    grid = get_grid("table2", dataset="fashion-mnist", preset="smoke", seeds=(0,))
    runs = plan(grid, tmp_path / "runs")
    for r in runs:
        r.folder.mkdir(parents=True)
        shutil.copyfile(SMOKE / f"{r.defense}-s{r.seed}.json", r.result)
    text = paper_table(grid, runs)
    measured = _row(text, "b", "NEO-KD (ours)", "measured (n=1)")
    assert measured and all("±" not in c for c in measured)  # one seed: no std of 0.00
    vs_adv = _row(text, "b", "NEO-KD (ours)", "vs adv")
    assert all(c.endswith("(no interval: fewer than 2 seeds or no spread) undecided") for c in vs_adv), vs_adv


def test_ablation_rows_say_what_the_missing_component_adds(cpu_table):
    """Table 6's question: on the committed CPU grid, the NKD and EOKD rows carry NEO-KD minus the row, with a
    Welch interval computed here from the per-seed averages of the result files."""
    from scipy import stats

    text = cpu_table

    def avg(defense: str) -> list[float]:
        out = []
        for f in sorted(CPU.glob(f"{defense}-s*.json")):
            top1 = json.loads(f.read_text())["evaluation"]["anytime"]["adversarial"]["pgd:max-average"]["top1"]
            out.append(sum(top1["mean"]) / len(top1["mean"]))
        return out

    for defense, label in (("nkd", "NKD"), ("eokd", "EOKD")):
        a, b = avg("neokd"), avg(defense)
        va, vb = stats.tvar(a) / len(a), stats.tvar(b) / len(b)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
        diff = sum(a) / len(a) - sum(b) / len(b)
        half = stats.t.ppf(0.975, df) * (va + vb) ** 0.5
        cell = _row(text, "a", label, "NEO-KD vs this")[-1]
        assert cell.startswith(f"{100 * diff:+.2f} [{100 * (diff - half):+.2f}, {100 * (diff + half):+.2f}]"), cell
    for label in ("Adv. w/o Distill [12]", "NEO-KD (ours)"):  # nothing to compare with itself
        section = text.split(f"| {label} |")[1].split("\n| NKD |" if label.startswith("Adv") else "\n## ")[0]
        assert "NEO-KD vs this" not in section


def test_the_worst_case_comes_first_with_no_reported_row_and_below_every_protocol_attack(cpu_table):
    """On the committed CPU grid: the table opens with the per-exit worst case (the board's headline), whose
    measured cells are the means of the result files' ``worst_case``, with no number of the paper beside them, and
    each at or below the same row's cell under every attack of the paper's protocol (per seed the worst case is
    at or below every attack, so the mean over the same seeds is too)."""
    text = cpu_table
    head, rest = text.split("## worst case per exit")
    assert "\n## (" not in head and rest.index("\n## (a) pgd:max-average") > 0  # first, before the paper's parts
    section = rest.split("\n## ")[0]
    assert "reported" not in section.split("\n|", 1)[1]  # the paper has no such number
    rows = (("adv", "Adv. w/o Distill [12]", 5), ("nkd", "NKD", 3), ("eokd", "EOKD", 3), ("neokd", "NEO-KD (ours)", 5))
    for defense, label, n in rows:
        docs = [json.loads(f.read_text()) for f in sorted(CPU.glob(f"{defense}-s*.json"))]
        assert len(docs) == n and all("worst_case" in d["evaluation"]["anytime"] for d in docs)
        cells = next(line for line in section.splitlines() if line.startswith(f"| {label} | measured (n={n}) |"))
        cells = [float(c.split("±")[0]) for c in cells.strip("|").split("|")[2:]]
        for k in range(3):
            mean = sum(d["evaluation"]["anytime"]["worst_case"]["top1"]["mean"][k] for d in docs) / len(docs)
            assert cells[k] == pytest.approx(100 * mean, abs=0.005)
        for attack in ("pgd:max-average", "pgd:average"):
            part = text.split(f") {attack} (paper")[1].split("\n## ")[0]
            line = next(x for x in part.splitlines() if x.startswith(f"| {label} | measured (n={n}) |"))
            paper = [float(c.split("±")[0]) for c in line.strip("|").split("|")[2:]]
            assert all(w <= p for w, p in zip(cells, paper)), (label, attack, cells, paper)
    assert section.count("| | vs adv |") == 3 and section.count("| | NEO-KD vs this |") == 2  # with intervals
