"""`neokd-bench validate`: each bad file is rejected in one line naming the file and the field."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
from neokd_bench import results as results_mod
from neokd_bench.cli import main

from .conftest import REFERENCE, write_json


def _doctor(doc: dict, how: str) -> dict:
    d = copy.deepcopy(doc)
    if how == "string":
        d["evaluation"]["anytime"]["clean"]["top1"]["avg"] = "0.73"
    elif how == "length":
        d["evaluation"]["anytime"]["clean"]["top1"]["per_exit"].append(0.5)
    elif how == "range":
        d["evaluation"]["anytime"]["clean"]["top1"]["per_exit"][1] = 1.3
    elif how == "flops":
        d["model"]["flops_per_exit"][2] = d["model"]["flops_per_exit"][1] - 1
    elif how == "eps":
        d["evaluation"]["attacks"]["pgd:max-average"]["config"]["eps"] = 8 / 255
    elif how == "version":
        d["schema_version"] = "7"
    elif how == "path":
        d["training"]["checkpoint"] = "/home/someone/runs/x/checkpoint.pt"
    return d


CASES = [
    ("string", "evaluation.anytime.clean.top1.avg", "is a string"),
    ("length", "evaluation.anytime.clean.top1.per_exit", "expected 3 entries"),
    ("range", "evaluation.anytime.clean.top1.per_exit[1]", "1.3"),
    ("flops", "model.flops_per_exit[2]", "rise"),
    ("eps", "evaluation.attacks.pgd:max-average.config.eps", "contradicts the fashion-mnist threat model"),
    ("version", "schema_version", "unknown schema version '7'"),
    ("path", "training.checkpoint", "absolute machine path"),
]


@pytest.mark.parametrize("how,field,words", CASES, ids=[c[0] for c in CASES])
def test_validate_rejects_a_bad_file_in_one_line(how, field, words, one_result, tmp_path, capsys):
    path = write_json(tmp_path / f"{how}.json", _doctor(one_result, how))
    assert main(["validate", "--quiet", str(path)]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if not line.endswith("result files valid")]
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: ") and field in problems[0] and words in problems[0]


def test_validate_rejects_a_truncated_file(one_result, tmp_path, capsys):
    text = json.dumps(one_result, indent=2)
    path = tmp_path / "truncated.json"
    path.write_text(text[: len(text) // 2])
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{path}: (top level): not JSON, truncated or corrupt") and len(out) == 2


def test_validate_accepts_every_committed_result(capsys):
    assert main(["validate", str(REFERENCE)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.endswith("result files valid") and last.split()[0] == last.split()[2]


def test_a_new_schema_file_is_all_a_new_version_takes(one_result, tmp_path, monkeypatch, capsys):
    schemas = tmp_path / "schema"
    schemas.mkdir()
    shutil.copy(results_mod.schema_path("1"), schemas / "result-1.schema.json")
    two = json.loads(results_mod.schema_path("1").read_text())
    two["properties"]["schema_version"] = {"const": "2"}
    (schemas / "result-2.schema.json").write_text(json.dumps(two))
    monkeypatch.setattr(results_mod, "_SCHEMA_DIRS", (schemas,))
    results_mod.load_schema.cache_clear()
    results_mod._validator.cache_clear()
    try:
        doc = dict(one_result, schema_version="2")
        assert main(["validate", "--quiet", str(write_json(tmp_path / "v2.json", doc))]) == 0
        doc = dict(one_result, schema_version="3")
        assert main(["validate", "--quiet", str(write_json(tmp_path / "v3.json", doc))]) == 1
        assert "unknown schema version '3'; this neokd-bench reads '1', '2'" in capsys.readouterr().out
    finally:
        results_mod.load_schema.cache_clear()
        results_mod._validator.cache_clear()
