"""Chatbot Arena's rank rule: a rank is 1 + the entries whose lead is significant (Welch, Holm over every pair).

The hand-built chain: A ties B and B ties C (B's seeds spread widely), but A beats C significantly even after
Holm's correction over the three pairs. Ranking by neighbours only would chain the ties and put C at rank 1.
"""

from __future__ import annotations

import copy

import pytest
from neokd_bench.leaderboard.aggregate import load_results, make_entries, markdown, summarize
from neokd_bench.leaderboard.stats import holm, significance_ranks, welch_diff

from .conftest import attack_row, write_json

A = [0.70, 0.71, 0.72, 0.70, 0.71]
B = [0.60, 0.72, 0.66, 0.58, 0.74]
C = [0.60, 0.61, 0.62, 0.60, 0.61]


def test_the_chain_is_what_the_test_claims():
    assert not welch_diff(A, B)["significant"] and not welch_diff(B, C)["significant"]
    ac = welch_diff(A, C)
    assert ac["significant"] and 3 * ac["p"] < 0.05  # significant after Holm over 3 pairs too


def test_a_chain_of_ties_never_lifts_an_entry_above_one_that_beats_it():
    ranks = significance_ranks({"a": A, "b": B, "c": C})
    assert ranks["rank"] == {"a": 1, "b": 1, "c": 2}
    assert ranks["beaten_by"] == {"a": [], "b": [], "c": ["a"]}
    assert len(ranks["pairs"]) == 3 and all(p["diff"] >= 0 for p in ranks["pairs"])


def test_holm_matches_a_hand_computation():
    # sorted: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04, running max 0.04); None counts as 1
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, None]) == [1.0, 1.0]
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 0.04 x 1 < 0.06: the running maximum
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1


def test_a_lead_significant_alone_can_be_a_tie_after_holm():
    # p about 0.03 alone: significant at 5%, but not once 10 pairs are tested
    x, y = [0.70, 0.72, 0.71], [0.66, 0.69, 0.67]
    d = welch_diff(x, y)
    assert d["significant"] and 0.005 < d["p"] < 0.05
    others = {f"z{i}": [0.3 + 0.01 * i, 0.31 + 0.01 * i, 0.29 + 0.01 * i] for i in range(3)}
    ranks = significance_ranks({"x": x, "y": y, **others})
    assert ranks["rank"]["y"] == 1 and ranks["rank"]["x"] == 1  # the x-y lead does not survive 10 pairs


def _seeded(doc: dict, name: str, seed: int, value: float) -> dict:
    d = copy.deepcopy(doc)
    d["defense"]["name"], d["seeds"]["train"] = name, seed
    for e in d["evaluation"]["anytime"]["adversarial"].values():
        e["top1"]["mean"] = [value] * len(e["top1"]["mean"])
        e["top1"]["per_seed"] = [e["top1"]["mean"]]
        e["top1"]["avg"].update(mean=value, per_seed=[value])
    return d


def test_the_board_ranks_the_hand_built_chain(one_result, tmp_path):
    for name, values in (("a", A), ("b", B), ("c", C)):
        for seed, v in enumerate(values):
            write_json(tmp_path / "res" / f"{name}-s{seed}.json", _seeded(one_result, name, seed, v))
    summary = summarize(make_entries(load_results([tmp_path / "res"])))
    for table in summary["tables"]:
        ranking = {r["defense"]: r for r in table["ranking"]}
        assert [r["defense"] for r in table["ranking"]] == ["a", "b", "c"]
        assert (ranking["a"]["rank"], ranking["b"]["rank"], ranking["c"]["rank"]) == (1, 1, 2)
        assert ranking["b"]["tied_with_above"] and not ranking["c"]["tied_with_above"]
        assert ranking["c"]["beaten_by"] == ["a"]
    assert "| 2 | c |" in markdown(summary, "t")

    from neokd_bench.leaderboard.site import build

    build([tmp_path / "res"], tmp_path / "site")
    html = (tmp_path / "site" / "index.html").read_text()
    c_row = attack_row(html, "c")
    assert '<td class="rank">2' in c_row and "below a" in c_row and "tie" not in c_row
    assert "Holm" in html  # the page says how the intervals are corrected


def test_on_the_committed_boards_no_row_shares_a_rank_with_an_entry_that_beats_it():
    from .conftest import ROOT

    for folder in sorted((ROOT / "leaderboard" / "results").iterdir()):
        if not folder.is_dir():
            continue
        summary = summarize(make_entries(load_results([folder])))
        for table in summary["tables"] + summary["headline"]:
            rank = {r["defense"]: r["rank"] for r in table["ranking"]}
            for pair in table["pairs"]:
                if pair["significant_holm"]:
                    assert rank[pair["against"]] > rank[pair["defense"]], (folder.name, table["attack"], pair)
                    assert pair["defense"] in next(r for r in table["ranking"]
                                                   if r["defense"] == pair["against"])["beaten_by"]
