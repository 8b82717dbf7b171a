"""Efficiency robustness on the board: a result without an efficiency section shows the one of
a separate efficiency eval of the same weights (same checkpoint sha256), with its protocol named; anything
else shows "not measured", never zero; strings from those files are escaped."""

from __future__ import annotations

import copy
import json

import pytest
from neokd_bench.errors import UsageError
from neokd_bench.leaderboard.site import build

from .conftest import REFERENCE, ROOT, attack_row, attack_rows, write_json
from .hostile import TEXT_PAYLOADS

EFFICIENCY = ROOT / "leaderboard" / "efficiency"
HIST = [0.5, 0.3, 0.2]


def efficiency_file(result: dict, sha: str, policy: str = "max-softmax") -> dict:
    """A result of kind eval that carries only an efficiency section, for the checkpoint ``sha``."""
    doc = copy.deepcopy(result)
    doc["kind"] = "eval"
    doc["training"]["checkpoint_sha256"] = sha
    doc["evaluation"]["protocol"] = {**doc["evaluation"].get("protocol", {}), "steps": 20, "attack_seeds": [0]}
    doc["evaluation"]["n_test"] = 500
    doc["evaluation"]["efficiency"] = {
        "policy": policy, "budget_index": 9,
        "clean": {"mflops_mean": 3.25, "exit_histogram": HIST},
        "slowdown": {"mflops_mean": 7.8, "exit_histogram": HIST, "factor": 2.4},
        "pgd:max-average": {"mflops_mean": 4.0, "exit_histogram": HIST, "factor": 1.23}}
    return doc


def row(html: str, defense: str) -> str:
    return attack_row(html, defense)


def test_an_efficiency_file_is_joined_to_the_result_of_the_same_weights(one_result, tmp_path):
    sha = one_result["training"]["checkpoint_sha256"]
    other = copy.deepcopy(one_result)
    other["defense"]["name"] = "other-weights"
    other["training"]["checkpoint_sha256"] = "0" * 64  # no efficiency file for these weights
    write_json(tmp_path / "res" / "a-s0.json", one_result)
    write_json(tmp_path / "res" / "b-s0.json", other)
    write_json(tmp_path / "eff" / "a-s0.json", efficiency_file(one_result, sha))
    write_json(tmp_path / "eff" / "c-s0.json", efficiency_file(one_result, "f" * 64))  # joins nothing
    info = build([tmp_path / "res"], tmp_path / "site", efficiency_dirs=[tmp_path / "eff"])
    assert info["entries"] == 2  # efficiency files are not entries of their own
    html = (tmp_path / "site" / "index.html").read_text()
    joined = row(html, one_result["defense"]["name"])
    assert ">3.25<" in joined and ">2.40<" in joined and ">1.23<" in joined and "†" in joined
    assert "not measured" not in joined and "a-s0.json (same checkpoint sha256)" in joined
    plain = row(html, "other-weights")
    assert plain.count("not measured") == 3 and "0.00" not in plain.split('data-metric="clean_mflops"')[1]
    assert "Measured with PGD-20, 500 test images, 1 attack seed, max-softmax policy." in html
    assert "joined by checkpoint sha256" in html


def test_without_efficiency_files_every_reference_entry_is_not_measured(reference_copy, tmp_path):
    build([reference_copy], tmp_path / "site")
    html = (tmp_path / "site" / "index.html").read_text()
    rows = attack_rows(html)
    assert rows and all(r.count("not measured") == 3 for r in rows)


def test_the_committed_efficiency_files_cover_every_reference_entry(reference_copy, tmp_path):
    """The published board: each of the 15 reference results (5 defenses x 3 seeds) is joined to the
    efficiency file of its own checkpoint, so no reference row says "not measured"."""
    build([reference_copy], tmp_path / "site", efficiency_dirs=[EFFICIENCY])
    summary = json.loads((tmp_path / "site" / "summary.json").read_text())
    assert len(summary["entries"]) == 5
    for e in summary["entries"]:
        eff = e["efficiency"]
        assert eff and len(eff["joined_from"]) == 3 and eff["slowdown_factor"]["n"] == 3, e["defense"]
        assert eff["slowdown_factor"]["mean"] > 1 and eff["protocol"].startswith("PGD-20, 500 test images")
    html = (tmp_path / "site" / "index.html").read_text()
    assert all(r.count("not measured") == 0 for r in attack_rows(html))


def test_two_efficiency_files_for_one_checkpoint_is_a_one_line_error(one_result, tmp_path):
    sha = one_result["training"]["checkpoint_sha256"]
    write_json(tmp_path / "res" / "a-s0.json", one_result)
    write_json(tmp_path / "eff" / "x.json", efficiency_file(one_result, sha))
    write_json(tmp_path / "eff" / "y.json", efficiency_file(one_result, sha))
    with pytest.raises(UsageError, match="two efficiency files evaluate the same checkpoint") as info:
        build([tmp_path / "res"], tmp_path / "site", efficiency_dirs=[tmp_path / "eff"])
    assert "\n" not in str(info.value)


def test_strings_from_efficiency_files_are_escaped(one_result, tmp_path):
    sha = one_result["training"]["checkpoint_sha256"]
    write_json(tmp_path / "res" / "a-s0.json", one_result)
    write_json(tmp_path / "eff" / "a-s0.json", efficiency_file(one_result, sha, policy=TEXT_PAYLOADS[0]))
    build([tmp_path / "res"], tmp_path / "site", efficiency_dirs=[tmp_path / "eff"])
    html = (tmp_path / "site" / "index.html").read_text()
    assert "<script" not in html and "&lt;script&gt;" in html


def test_the_reference_results_record_their_checkpoint():
    for p in sorted(REFERENCE.glob("*-s*.json")):
        sha = json.loads(p.read_text())["training"].get("checkpoint_sha256")
        assert isinstance(sha, str) and len(sha) == 64, p.name
