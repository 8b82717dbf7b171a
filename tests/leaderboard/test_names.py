"""Names follow the registry grammar (a hostile one is refused in one line); Markdown output is escaped; plot
text is never parsed as mathtext."""

from __future__ import annotations

import copy
import json
import re

import pytest
from neokd_bench.cli import main
from neokd_bench.contract import name_problem
from neokd_bench.errors import UsageError
from neokd_bench.leaderboard.aggregate import make_entries, markdown, md_escape, summarize
from neokd_bench.leaderboard.site import build
from neokd_bench.leaderboard.validate import check_file
from neokd_bench.plots import plot_budgeted, plot_budgeted_seeds, plot_transfer

from .conftest import reference_files, write_json
from .hostile import HOSTILE_NAMES, NAME

IMG = "<img src=x onerror=alert(1)>"
MATH = "$\\undefinedcmd{x}$"


@pytest.mark.parametrize("field", ["defense", "model", "dataset"])
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_validate_refuses_a_name_outside_the_grammar_in_one_line(one_result, tmp_path, capsys, field, name):
    doc = copy.deepcopy(one_result)
    doc[field]["name"] = name
    path = write_json(tmp_path / "r.json", doc)
    _, problems = check_file(path)
    mine = [p for p in problems if f"{field}.name" in p]
    assert len(mine) == 1 and "\n" not in mine[0]
    assert "lowercase letters, digits" in mine[0] or name == ""  # the schema refuses an empty name first
    assert main(["validate", "--quiet", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{field}.name" in out and "Traceback" not in out
    with pytest.raises(UsageError):  # the board never builds from it
        build([path], tmp_path / "site")


@pytest.mark.parametrize("name", ["adv", "neokd", "my-defense", "msdnet_cifar10", "neokd.paper", "a" * 64, "0"])
def test_registry_names_pass(name):
    assert name_problem("defense.name", name) is None


def test_the_committed_results_follow_the_grammar():
    for path in reference_files():
        assert check_file(path)[1] == [], path


def _unvalidated_summary(one_result: dict, name: str, model: str) -> dict:
    """A summary built from a result whose names skipped validation (defense in depth for the writers)."""
    doc = copy.deepcopy(one_result)
    doc["defense"]["name"], doc["model"]["name"] = name, model
    base = copy.deepcopy(one_result)
    base["defense"]["name"] = "adv"
    return summarize(make_entries([(reference_files()[0], doc), (reference_files()[1], base)]))


def test_markdown_escapes_every_string_from_a_result(one_result):
    md = markdown(_unvalidated_summary(one_result, IMG, MATH), "t")
    assert IMG not in md and MATH not in md
    assert re.search(r"(?<!\\)[<>$]", md.replace("`", "")) is None  # every <, > and $ is escaped
    assert md_escape(IMG) in md and md_escape(MATH) in markdown(_unvalidated_summary(one_result, MATH, "m"), "t")
    assert md_escape(IMG) == "\\<img src=x onerror=alert\\(1\\)\\>"
    assert md_escape(MATH) == "\\$\\\\undefinedcmd\\{x\\}\\$"
    assert md_escape("a|b\nc") == "a\\|b c"  # a cell cannot be split or a new line started
    assert md_escape("pgd:max-average") == "pgd:max-average"  # plain labels stay readable


def test_summary_json_carries_names_as_data(one_result):
    summary = _unvalidated_summary(one_result, NAME, MATH)
    text = json.dumps(summary)
    assert NAME in {e["defense"] for e in json.loads(text)["entries"]}  # JSON keeps the value; validate refuses it


@pytest.mark.parametrize("label", [MATH, "$x$ and $y$", "\\frac{1}{2} $", IMG])
def test_plot_text_is_never_parsed_as_mathtext(one_result, tmp_path, label):
    curve = one_result["evaluation"]["budgeted"]["curves"]["pgd:max-average"]
    paths = plot_budgeted_seeds({label: [curve, curve]}, tmp_path / "band", curve=label, formats=("svg",))
    paths += plot_budgeted([one_result], tmp_path / "lines", curve="pgd:max-average", labels=[label],
                           formats=("svg",))
    if one_result["evaluation"].get("transfer"):
        paths += plot_transfer(one_result, tmp_path / "transfer", title=label, formats=("svg",))
    for p in paths:
        text = p.read_text()
        assert "<img" not in text and "<script" not in text


def test_a_dollar_name_in_a_plot_is_shown_as_typed(one_result, tmp_path):
    curve = one_result["evaluation"]["budgeted"]["curves"]["pgd:max-average"]
    (svg,) = plot_budgeted_seeds({MATH: [curve]}, tmp_path / "band", curve="pgd:max-average", formats=("svg",))
    assert "undefinedcmd" in svg.read_text()  # the legend's text, kept verbatim (rendered as glyphs, not math)
