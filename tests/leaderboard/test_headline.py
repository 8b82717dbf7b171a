"""The headline is the per-exit worst case; where a result lacks it the board says "not measured" and ranks
nothing under it; masking verdicts are shown ("failed" flagged, "not checked" when absent)."""

from __future__ import annotations

import copy
import json

from neokd_bench.leaderboard.aggregate import WORST, load_results, make_entries, markdown, summarize
from neokd_bench.leaderboard.site import build

from .conftest import write_json


def with_worst_case(doc: dict, per_exit: list[float], parts: list[tuple[str, int]] | None = None) -> dict:
    """A copy of a committed result with ``evaluation.anytime.worst_case`` added (the schema-3 contract)."""
    d = copy.deepcopy(doc)
    seeds = d["evaluation"]["anytime"]["adversarial"]["pgd:max-average"]["seeds"]
    avg = sum(per_exit) / len(per_exit)
    parts = parts or [("pgd:max-average", 500), ("pgd:average", 500), ("apgd-dlr:exit:0", 200)]
    d["evaluation"]["anytime"]["worst_case"] = {
        "seeds": seeds, "n": d["evaluation"]["anytime"]["n"],
        "top1": {"mean": per_exit, "std": [0.0] * len(per_exit), "per_seed": [per_exit],
                 "avg": {"mean": avg, "std": 0.0, "per_seed": [avg]}},
        "parts": [{"label": lab, "n": n, "seeds": seeds} for lab, n in parts]}
    return d


def _write_pair(one_result: dict, folder, worst: bool) -> None:
    """Two defenses x 3 seeds made from a committed result, without its worst case and masking verdict (as
    results made before they were recorded); ``worst`` adds a worst case that ``strong`` wins by 10 points."""
    bare = copy.deepcopy(one_result)
    bare["evaluation"]["anytime"].pop("worst_case", None)
    bare["evaluation"].pop("masking", None)
    for seed in range(3):
        for name, base in (("strong", 0.40), ("weak", 0.30)):
            d = copy.deepcopy(bare)
            d["defense"]["name"], d["seeds"]["train"] = name, seed
            if worst:
                d = with_worst_case(d, [base + 0.01 * seed, base + 0.02, base + 0.03])
            write_json(folder / f"{name}-s{seed}.json", d)


def test_the_worst_case_heads_the_board_and_ranks_it(one_result, tmp_path):
    _write_pair(one_result, tmp_path / "res", worst=True)
    entries = make_entries(load_results([tmp_path / "res"]))
    assert all(WORST in e["accuracy"] for e in entries)
    summary = summarize(entries)
    head = summary["headline"][0]
    assert head["attack"] == WORST and [r["defense"] for r in head["ranking"]] == ["strong", "weak"]
    assert [r["rank"] for r in head["ranking"]] == [1, 2] and head["ranking"][1]["beaten_by"] == ["strong"]
    strong = next(e for e in summary["entries"] if e["defense"] == "strong")
    assert strong["accuracy"][WORST]["avg"]["mean"] < strong["accuracy"]["pgd:max-average"]["avg"]["mean"]
    assert {p["label"]: p["n"] for p in strong["worst_case_parts"]}["apgd-dlr:exit:0"] == [200, 200, 200]
    md = markdown(summary, "t")
    assert md.index("worst case per exit (headline)") < md.index("pgd:max-average")
    assert "apgd-dlr:exit:0 on 200 images" in md

    build([tmp_path / "res"], tmp_path / "site")
    html = (tmp_path / "site" / "index.html").read_text()
    first = html.split('<table class="leaderboard"')[1].split("</table>")[0]
    assert 'data-attack="worst-case"' in first  # the first table of the index is the worst case
    cell = first.split('data-defense="strong"')[1].split('data-exit="mean" data-metric="worst-case"')[1]
    assert cell.startswith("><strong>42.00<")  # mean over exits and seeds of the worst case, in %
    assert "(paper)" in first and "the paper's protocol" in first  # the paper's protocol stands beside it
    assert "apgd-dlr:exit:0 on 200 images" in html  # on how many images each part was measured
    assert "worst case" in html.split("<section class=\"intro\">")[1].split("</section>")[0]


def test_a_result_without_the_worst_case_is_not_measured_never_a_weaker_number(one_result, tmp_path):
    _write_pair(one_result, tmp_path / "res", worst=False)
    summary = summarize(make_entries(load_results([tmp_path / "res"])))
    head = summary["headline"][0]
    assert all(r["rank"] is None and not r["measured"] for r in head["ranking"]) and head["pairs"] == []
    assert WORST not in json.dumps([e["accuracy"] for e in summary["entries"]])
    md = markdown(summary, "t")
    headline_md = md.split("worst case per exit (headline)")[1].split("\n## ")[0]
    assert "not measured" in headline_md and "±" not in headline_md

    build([tmp_path / "res"], tmp_path / "site")
    html = (tmp_path / "site" / "index.html").read_text()
    first = html.split('data-attack="worst-case"')[1].split("</table>")[0]
    assert first.count("not measured (its results carry no worst case)") == 2 and "not ranked" in first
    for e in summary["entries"]:  # the max-average number is beside it, labelled, never under the worst case
        mx = f"{100 * e['accuracy']['pgd:max-average']['avg']['mean']:.2f}"
        row = first.split(f'data-defense="{e["defense"]}"')[1].split("</tr>")[0]
        assert f'data-metric="pgd:max-average">{mx}<' in row and f'data-metric="worst-case">{mx}' not in row


def test_one_seed_without_the_worst_case_makes_the_entry_not_measured(one_result, tmp_path):
    _write_pair(one_result, tmp_path / "res", worst=True)
    d = json.loads((tmp_path / "res" / "weak-s2.json").read_text())
    del d["evaluation"]["anytime"]["worst_case"]
    write_json(tmp_path / "res" / "weak-s2.json", d)
    head = summarize(make_entries(load_results([tmp_path / "res"])))["headline"][0]
    assert [(r["defense"], r["rank"]) for r in head["ranking"]] == [("strong", 1), ("weak", None)]


def test_masking_verdicts_are_flagged_or_said_not_checked(one_result, tmp_path):
    _write_pair(one_result, tmp_path / "res", worst=True)
    for seed in range(3):
        path = tmp_path / "res" / f"strong-s{seed}.json"
        d = json.loads(path.read_text())
        ok = seed != 1
        d["evaluation"]["masking"] = {"passed": ok, "checks": [
            {"name": "black-box", "passed": ok, "detail": "Square 27.5% vs PGD 37.0% at exit 1"},
            {"name": "zero-gradients", "passed": True, "detail": "none"}]}
        write_json(path, d)
    entries = {e["defense"]: e for e in make_entries(load_results([tmp_path / "res"]))}
    assert entries["strong"]["masking"]["status"] == "failed"
    assert entries["strong"]["masking"]["failed_checks"] == ["black-box"]
    assert entries["weak"]["masking"]["status"] == "not checked"
    build([tmp_path / "res"], tmp_path / "site")
    html = (tmp_path / "site" / "index.html").read_text()
    first = html.split('data-attack="worst-case"')[1].split("</table>")[0]
    strong = first.split('data-defense="strong"')[1].split("</tr>")[0]
    weak = first.split('data-defense="weak"')[1].split("</tr>")[0]
    assert "masking check failed" in strong and "Square 27.5% vs PGD 37.0% at exit 1" in strong
    assert "not checked" in weak and "masking check failed" not in weak
    assert "masking check failed" in markdown(summarize(list(entries.values())), "t")


def test_each_exit_of_the_headline_has_its_own_rank(one_result, tmp_path):
    _write_pair(one_result, tmp_path / "res", worst=True)
    head = summarize(make_entries(load_results([tmp_path / "res"])))["headline"][0]
    ranks = {r["defense"]: r["exit_ranks"] for r in head["ranking"]}
    # exit 1 varies with the seed on both sides (10 points apart): significant; exits 2 and 3 have no spread
    assert ranks == {"strong": [1, 1, 1], "weak": [2, 1, 1]}
