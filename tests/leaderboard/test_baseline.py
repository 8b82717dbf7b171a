"""The board's reference defense is a parameter (`leaderboard build --baseline NAME`), not a name in the code."""

from __future__ import annotations

from pathlib import Path

import pytest
from neokd_bench.cli import main
from neokd_bench.leaderboard.aggregate import load_results, make_entries, summarize

CPU = Path(__file__).resolve().parents[2] / "leaderboard" / "results" / "fashion-mnist-cpu"


@pytest.fixture(scope="module")
def entries():
    return make_entries(load_results([CPU]))


@pytest.mark.parametrize("baseline", ["adv", "neokd"])
def test_every_comparison_is_against_the_baseline_given(entries, baseline):
    summary = summarize(entries, baseline=baseline)
    assert summary["baseline"] == baseline
    against = {c["against"] for t in summary["tables"] for c in t["comparisons"]}
    assert against == {baseline}
    defenses = {c["defense"] for t in summary["tables"] for c in t["comparisons"]}
    assert baseline not in defenses and defenses == {e["defense"] for e in entries} - {baseline}


def test_the_built_site_names_the_baseline(tmp_path, capsys):
    assert main(["leaderboard", "build", "--results", str(CPU), "--out", str(tmp_path / "site"),
                 "--baseline", "nkd"]) == 0
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "against nkd" in index and "against adv" not in index


def test_a_baseline_outside_the_name_grammar_is_one_line(tmp_path, capsys):
    assert main(["leaderboard", "build", "--out", str(tmp_path / "site"), "--baseline", "<b>x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --baseline") and not (tmp_path / "site").exists()
