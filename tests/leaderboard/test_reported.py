"""The paper's reported numbers: schema-checked data, transcribed per exit with table and row."""

from __future__ import annotations

import copy
import json

import pytest
from neokd_bench.errors import UsageError
from neokd_bench.leaderboard.reported import REPORTED_DIR, check_reported, load_reported

PAPER = REPORTED_DIR / "neokd-paper.json"


def _find(entries, table, part, defense):
    return next(e for e in entries if (e["table"], e["part"], e["defense"]) == (table, part, defense))


def test_every_table_is_there_with_its_rows():
    entries = load_reported()
    tables = {(e["table"], e["part"]) for e in entries}
    assert tables == ({(t, p) for t in ("1", "2", "3", "4", "5", "A1", "A2", "A3") for p in "ab"}
                      | {("6", "a"), ("7", "a"), ("8", "a"), ("8", "b"), ("8", "c"), ("A4", "a")})
    assert len(entries) == 68 + 4 + 4 + 6 + 9  # Tables 1-5, A1-A3; then 6, 7, 8 and A4 (neokd-paper-ablations)
    assert {e["dataset"] for e in entries} == {"mnist", "cifar10", "cifar100", "tiny-imagenet", "imagenet"}


@pytest.mark.parametrize("table,part,defense,top1,avg", [
    ("1", "a", "neokd", [90.56, 96.30, 96.62], 94.49),  # MNIST, max-average
    ("2", "b", "adv", [38.00, 41.42, 40.70], 40.04),  # CIFAR-10, average
    ("3", "a", "neokd", [28.37, 28.78, 29.02, 29.49, 30.06, 28.45, 28.54], 28.96),  # CIFAR-100
    ("4", "a", "skd", [33.04, 33.24, 30.50, 28.40, 28.50], 30.74),  # Tiny-ImageNet (Avg. printed twice)
    ("5", "b", "neokd", [22.42, 28.62, 31.77, 32.78, 34.30], 29.98),  # ImageNet
    ("A1", "a", "adv", [98.14, 99.36, 99.55], 99.02),  # MNIST clean
    ("A2", "b", "skd", [15.96, 15.90, 15.31, 15.32, 15.70, 14.84, 10.33], 14.77),
    ("A3", "a", "pgd-te", [48.73, 46.00, 46.85], 47.19),
    ("6", "a", "eokd", [37.26, 41.10, 38.68], 39.01),  # CIFAR-10, average (neokd-paper-ablations.json)
    ("7", "a", "nkd-no-ensemble", [39.54, 41.77, 40.15], 40.49),
    ("8", "b", "adv", [35.31, 35.72, 36.47, 36.85, 37.20, 37.19, 36.68], 36.49),  # CIFAR-100, CW
    ("A4", "a", "ard-exit0", [35.64, 38.10, 42.12], 38.62),
])
def test_spot_values_match_the_paper(table, part, defense, top1, avg):
    e = _find(load_reported(), table, part, defense)
    assert e["top1"]["per_exit"] == top1 and e["top1"]["avg"] == avg


def test_top5_and_clean_fields():
    entries = load_reported()
    t4 = _find(entries, "4", "a", "adv")
    assert t4["top5"] == {"per_exit": [60.20, 60.84, 61.10, 58.64, 59.56], "avg": 60.07}
    a1 = _find(entries, "A1", "b", "neokd")
    assert a1["metric"] == "clean" and a1["attack"] is None and a1["dataset"] == "tiny-imagenet"
    assert _find(entries, "A2", "a", "adv")["train_attack"] == "average"


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d["entries"][0]["top1"]["per_exit"].__setitem__(0, "89.74"), "entries.0.top1.per_exit.0"),
    (lambda d: d["entries"][0].pop("table"), "'table' is a required property"),
    (lambda d: d["entries"][0]["top1"].__setitem__("avg", 95.5), "entries.0.top1.avg"),
    (lambda d: d["entries"][0]["top1"]["per_exit"].__setitem__(1, 195.89), "entries.0.top1.per_exit.1"),
])
def test_a_bad_transcription_is_refused(edit, needle):
    doc = copy.deepcopy(json.loads(PAPER.read_text()))
    edit(doc)
    with pytest.raises(UsageError, match="neokd-paper") as info:
        check_reported(doc, "neokd-paper.json")
    assert needle in str(info.value)
