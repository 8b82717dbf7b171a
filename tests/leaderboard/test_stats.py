"""Welch intervals against a hand computation; a lead whose interval straddles zero is shown as a tie."""

from __future__ import annotations

import math

import pytest
from neokd_bench.leaderboard.aggregate import diff_text, load_results, make_entries, markdown, summarize
from neokd_bench.leaderboard.stats import mean_std, verdict, welch_diff

from .conftest import attack_row, write_json


def test_welch_interval_matches_a_hand_computation():
    a, b = [0.60, 0.62, 0.64], [0.50, 0.51, 0.55]
    # by hand: means 0.62 and 0.52; variances 0.0004 and 0.0007 (ddof=1); se^2 = 0.0004/3 + 0.0007/3 = 0.00036667
    # df = se^4 / ((0.0004/3)^2/2 + (0.0007/3)^2/2) = 48.4/13 = 3.72308; t(0.975, 3.72308) = 2.85982 (Simpson
    # integration of the t density, between the tables' 2.776 at 4 df and 3.182 at 3 df);
    # half-width = 2.85982 * 0.0191485 = 0.054761
    d = welch_diff(a, b)
    assert d["diff"] == pytest.approx(0.10)
    assert d["df"] == pytest.approx(48.4 / 13)
    se = math.sqrt(0.0004 / 3 + 0.0007 / 3)
    assert se == pytest.approx(0.0191485, abs=1e-7)
    assert d["ci"][0] == pytest.approx(0.10 - 0.054761, abs=1e-5)
    assert d["ci"][1] == pytest.approx(0.10 + 0.054761, abs=1e-5)
    assert d["significant"] and verdict(d) == "win"


def test_interval_straddling_zero_is_a_tie_and_too_few_seeds_is_never_significant():
    d = welch_diff([0.60, 0.58, 0.62], [0.59, 0.57, 0.60])
    assert d["ci"][0] < 0 < d["ci"][1]
    assert verdict(d) == "tie" and "tie" in diff_text(d)
    assert verdict(welch_diff([0.9], [0.1])) == "tie"  # one seed: no interval
    assert verdict(welch_diff([0.5, 0.5], [0.5, 0.5])) == "tie"  # no spread: no interval
    assert mean_std([0.5])["std"] == 0.0


def _with_adv(doc: dict, name: str, seed: int, shift: float) -> dict:
    d = dict(doc, defense={**doc["defense"], "name": name}, seeds={**doc["seeds"], "train": seed})
    d = __import__("copy").deepcopy(d)
    for e in d["evaluation"]["anytime"]["adversarial"].values():
        top1 = e["top1"]
        top1["mean"] = [min(1.0, v + shift) for v in top1["mean"]]
        top1["per_seed"] = [top1["mean"]]
        top1["avg"]["mean"] = sum(top1["mean"]) / len(top1["mean"])
        top1["avg"]["per_seed"] = [top1["avg"]["mean"]]
    return d


def test_a_non_significant_lead_is_printed_as_a_tie_on_the_board_and_in_the_summary(tmp_path, one_result):
    # "leader" is ahead of adv on average, but the seeds overlap: the lead is not significant
    for seed, (lead, base) in enumerate([(0.010, 0.0), (-0.004, 0.006), (0.012, -0.002)]):
        write_json(tmp_path / f"leader-s{seed}.json", _with_adv(one_result, "leader", seed, lead))
        write_json(tmp_path / f"adv-s{seed}.json", _with_adv(one_result, "adv", seed, base))
    summary = summarize(make_entries(load_results([tmp_path])))
    table = summary["tables"][0]
    assert [r["defense"] for r in table["ranking"]] == ["leader", "adv"]
    assert table["ranking"][1]["rank"] == 1 and table["ranking"][1]["tied_with_above"]
    avg = next(c for c in table["comparisons"] if c["exit"] == "avg" and c["defense"] == "leader")
    assert avg["diff"] > 0 and avg["ci"][0] < 0 < avg["ci"][1] and avg["verdict"] == "tie"
    md = markdown(summary, "t")
    assert "1 (tie)" in md and " win |" not in md.split("avg | leader | adv |")[1].splitlines()[0]

    from neokd_bench.leaderboard.site import build

    build([tmp_path], tmp_path / "site")
    html = (tmp_path / "site" / "index.html").read_text()
    row = attack_row(html, "adv")
    assert "tie ↑" in row  # adv shares rank 1 with the leader on the board
