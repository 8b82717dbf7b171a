"""Budgeted curves on the board: mean over training seeds with a band, policy-pgd when present, and "budget
needed" with its interval over seeds and a tie where the saving is not significant."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from neokd_bench.leaderboard.aggregate import budgets, load_results, make_entries, markdown, saving_text, summarize
from neokd_bench.leaderboard.budget import accuracy_at
from neokd_bench.leaderboard.site import build
from neokd_bench.plots import seed_band

from .conftest import write_json


def _entry(name: str, reach: list[float]) -> dict:
    """An entry whose seed i reaches 90% at exactly ``reach[i]`` MFLOPs."""
    runs = [{"evaluation": {"budgeted": {"curves": {"x": {"mflops": [0.5, b], "accuracy": [0.1, 0.9]}}}}}
            for b in reach]
    return {"defense": name, "_runs": runs}


def test_budget_needed_carries_its_interval_and_a_tie_when_the_saving_is_not_significant():
    b = budgets([_entry("adv", [4.0, 5.0, 6.0]), _entry("fast", [1.0, 1.1, 1.2]), _entry("noisy", [1.0, 9.0, 2.0])],
                "x")
    assert b["target_accuracy"] == pytest.approx(0.9)
    adv, fast, noisy = (b["mflops_to_reach"][n] for n in ("adv", "fast", "noisy"))
    assert adv["mean"] == pytest.approx(5.0) and adv["ci"][0] < 5.0 < adv["ci"][1]
    # t(0.975, 2) = 4.3027: half-width 4.3027 * 1 / sqrt(3)
    assert adv["ci"][1] - 5.0 == pytest.approx(4.3027 / np.sqrt(3), abs=1e-3)
    assert fast["vs_baseline"]["verdict"] == "win" and fast["vs_baseline"]["saved"] == pytest.approx(0.78)
    assert noisy["vs_baseline"]["verdict"] == "tie" and noisy["vs_baseline"]["saved"] == pytest.approx(0.2)
    assert adv["vs_baseline"] is None
    assert "78.00% saved" in saving_text("fast", fast, adv) and saving_text("fast", fast, adv).endswith("; win)")
    assert saving_text("noisy", noisy, adv) == ("noisy: 4.00 vs adv: 5.00 MFLOPs, 20.00% saved "
                                                "(difference [-11.157, +9.157] MFLOPs; tie)")


def test_seed_band_is_the_mean_and_the_min_max_of_the_seeds_envelopes():
    a = {"mflops": [1.0, 2.0, 3.0], "accuracy": [0.2, 0.5, 0.4]}  # envelope: (1, .2), (2, .5); .5 beyond
    b = {"mflops": [1.0, 3.0], "accuracy": [0.4, 0.6]}
    assert accuracy_at(a["mflops"], a["accuracy"], [1.5, 2.5, 0.5]).tolist()[:2] == pytest.approx([0.35, 0.5])
    assert np.isnan(accuracy_at(a["mflops"], a["accuracy"], [0.5])[0])
    xs, mean, lo, hi = seed_band([a, b], points=3)
    assert xs == pytest.approx([1.0, 2.0, 3.0])
    assert mean == pytest.approx([0.3, 0.5, 0.55]) and lo == pytest.approx([0.2, 0.5, 0.5])
    assert hi == pytest.approx([0.4, 0.5, 0.6])


def test_the_dataset_page_plots_every_attack_with_a_band_and_policy_pgd(one_result, tmp_path):
    for seed in range(3):
        for name in ("adv", "other"):
            d = copy.deepcopy(one_result)
            d["defense"]["name"], d["seeds"]["train"] = name, seed
            curves = d["evaluation"]["budgeted"]["curves"]
            policy = copy.deepcopy(curves["pgd:max-average"])
            policy["accuracy"] = [max(0.0, a - 0.05 - 0.01 * seed) for a in policy["accuracy"]]
            policy["max_accuracy"] = max(policy["accuracy"])
            curves["policy-pgd"] = policy
            write_json(tmp_path / "res" / f"{name}-s{seed}.json", d)
    summary = summarize(make_entries(load_results([tmp_path / "res"])))
    assert "policy-pgd" in summary["budgeted"]["fashion-mnist/smoke"]
    assert "(policy-pgd)" in markdown(summary, "t")
    build([tmp_path / "res"], tmp_path / "site")
    page = next((tmp_path / "site").glob("fashion-mnist-*.html")).read_text()
    assert page.count("<figure>") == 3  # max-average, average and policy-pgd
    assert "the adaptive\nattacker who knows the exit thresholds" in page
    assert "the shaded band is the min-max over training seeds" in page and "(adv: 3, other: 3)" in page
    assert "Budget needed to reach" in page and "t-interval of the mean" in page
    svgs = sorted((tmp_path / "site" / "plots").glob("*policy-pgd-budgeted*.svg"))
    assert len(svgs) == 1 and "band: min-max" in svgs[0].read_text()
