"""Result files: schema validation (each rejection named by its field path), atomic writes, provenance."""

from __future__ import annotations

import copy
import json

import pytest
from neokd_bench.errors import UsageError
from neokd_bench.results import (
    SCHEMA_VERSION,
    ResultValidationError,
    load_result,
    load_schema,
    make_result,
    provenance,
    validate_result,
    write_result,
)

PROV = {"package": "neokd-bench", "version": "0.1.0", "git_commit": None, "git_dirty": None, "torch": "2.14.1",
        "cuda": None, "device": "cpu", "python": "3.11", "platform": "Linux", "created_utc": "2026-01-01T00:00:00"}


def _seeded(values_per_seed):
    import numpy as np

    a = np.array(values_per_seed)
    avg = a.mean(axis=1)
    return {"mean": a.mean(0).tolist(), "std": a.std(0, ddof=1).tolist(), "per_seed": a.tolist(),
            "avg": {"mean": float(avg.mean()), "std": float(avg.std(ddof=1)), "per_seed": avg.tolist()}}


@pytest.fixture
def doc() -> dict:
    """A complete, valid 3-exit result."""
    evaluation = {
        "attacks": {"pgd:average": {"name": "pgd", "config": {"eps": 0.1, "steps": 50}, "model_mode": "eval",
                                    "seeds": [0, 1]}},
        "anytime": {
            "n": 100,
            "clean": {"top1": {"per_exit": [0.8, 0.85, 0.9], "avg": 0.85},
                      "top5": {"per_exit": [0.95, 0.97, 0.99], "avg": 0.97}},
            "adversarial": {"pgd:average": {"seeds": [0, 1], "top1": _seeded([[0.4, 0.5, 0.6], [0.42, 0.5, 0.58]]),
                                            "top5": None, "wall_s": 1.5}},
        },
        "budgeted": {
            "thresholds_on": "clean", "ensemble": True, "n_val": 50,
            "allocations": [[50, 0, 0], [20, 20, 10], [0, 0, 50]],
            "thresholds": [[0.1, None, None], [0.9, 0.8, None], [None, None, None]],
            "exit_mflops": [1.0, 8.5, 11.1],
            "curves": {"clean": {"mflops": [1.0, 5.0, 11.1], "accuracy": [0.8, 0.85, 0.9]},
                       "pgd:average": {"mflops": [1.0, 5.0, 11.1], "accuracy": [0.4, 0.5, 0.55]}},
        },
        "transfer": {"n": 40, "matrix": [[1.0, 0.2, 0.1], [0.3, 1.0, 0.2], [0.1, 0.3, 1.0]], "offdiag_mean": 0.2,
                     "attack": {"name": "pgd"}},
        "wall_s": {"total_s": 3.0},
    }
    return make_result(
        model={"name": "smallcnn", "kwargs": {}, "num_exits": 3, "params": 1000, "flops_per_exit": [10, 20, 30]},
        dataset={"name": "fashion-mnist", "source": "bundled", "num_classes": 10},
        defense={"name": "adv", "config": {"eps": 0.1}, "assumptions": ["x"]},
        training=None, evaluation=evaluation, seeds={"train": 0, "attack": [0, 1]},
        timings={"eval_s": 3.0}, provenance_info=PROV)


def test_valid_document_round_trips(doc, tmp_path):
    assert doc["schema_version"] == SCHEMA_VERSION
    assert load_schema()["$id"].endswith(f"result-{SCHEMA_VERSION}.schema.json")
    path = write_result(tmp_path / "r.json", doc)
    assert load_result(path) == doc


def _reject(doc: dict, *words: str) -> str:
    with pytest.raises(ResultValidationError) as exc:
        validate_result(doc)
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_rejects_a_missing_field(doc):
    del doc["model"]["params"]
    _reject(doc, "model.params", "missing")


def test_rejects_a_missing_top_level_field(doc):
    del doc["provenance"]
    _reject(doc, "provenance")


def test_rejects_a_number_stored_as_a_string(doc):
    doc["evaluation"]["anytime"]["clean"]["top1"]["per_exit"][1] = "0.85"
    _reject(doc, "evaluation.anytime.clean.top1.per_exit[1]", "string")


def test_rejects_per_exit_array_whose_length_disagrees_with_num_exits(doc):
    doc["evaluation"]["anytime"]["adversarial"]["pgd:average"]["top1"]["mean"] = [0.4, 0.5]
    _reject(doc, "evaluation.anytime.adversarial.pgd:average.top1.mean", "expected 3")


def test_rejects_transfer_matrix_of_the_wrong_size(doc):
    doc["evaluation"]["transfer"]["matrix"][2] = [0.1, 0.3]
    _reject(doc, "evaluation.transfer.matrix[2]", "expected 3")


def test_rejects_flops_per_exit_length(doc):
    doc["model"]["flops_per_exit"] = [10, 20, 30, 40]
    _reject(doc, "model.flops_per_exit")


def test_rejects_budgeted_curve_with_wrong_number_of_points(doc):
    doc["evaluation"]["budgeted"]["curves"]["clean"]["accuracy"] = [0.8, 0.9]
    _reject(doc, "evaluation.budgeted.curves.clean.accuracy", "allocation")


def test_rejects_an_unknown_schema_version(doc):
    doc["schema_version"] = "99"
    _reject(doc, "schema_version", "'99'")


def test_rejects_nan_and_non_json_values(doc):
    d = copy.deepcopy(doc)
    d["timings"]["eval_s"] = float("nan")
    _reject(d, "timings.eval_s", "finite")
    import numpy as np

    d = copy.deepcopy(doc)
    d["model"]["params"] = np.int64(5)
    _reject(d, "model.params", "to_jsonable")


def test_rejects_accuracy_out_of_range_and_unknown_top_level_field(doc):
    d = copy.deepcopy(doc)
    d["evaluation"]["anytime"]["clean"]["top1"]["avg"] = 85.0
    _reject(d, "evaluation.anytime.clean.top1.avg")
    d = copy.deepcopy(doc)
    d["extra"] = 1
    _reject(d, "extra", "unknown field")


def test_validation_error_is_a_usage_error():
    assert issubclass(ResultValidationError, UsageError)


def test_write_result_writes_nothing_when_validation_fails(doc, tmp_path):
    doc["model"]["params"] = "1000"
    target = tmp_path / "sub" / "r.json"
    with pytest.raises(ResultValidationError):
        write_result(target, doc)
    assert not target.exists()
    assert not (tmp_path / "sub").exists() or list((tmp_path / "sub").iterdir()) == []


def test_write_result_does_not_replace_an_existing_file_with_an_invalid_one(doc, tmp_path):
    target = write_result(tmp_path / "r.json", doc)
    before = target.read_text()
    bad = copy.deepcopy(doc)
    bad["schema_version"] = "9"
    with pytest.raises(ResultValidationError):
        write_result(target, bad)
    assert target.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_atomic_write_leaves_no_temp_files(doc, tmp_path):
    for _ in range(3):
        write_result(tmp_path / "r.json", doc)
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    assert json.loads((tmp_path / "r.json").read_text())["kind"] == "eval"


def test_load_result_names_the_file(doc, tmp_path):
    p = tmp_path / "bad.json"
    bad = copy.deepcopy(doc)
    del bad["seeds"]
    p.write_text(json.dumps(bad))
    with pytest.raises(ResultValidationError, match=r"bad\.json: result field seeds"):
        load_result(p)


def test_provenance_fields_and_no_git(monkeypatch, tmp_path):
    import platform

    import neokd_bench.results as results

    p = provenance("cpu")
    assert p["torch"] and p["python"] == platform.python_version()
    assert platform.node() not in json.dumps(p) or not platform.node()
    monkeypatch.setattr(results, "_REPO_ROOT", tmp_path)  # not a git checkout
    q = provenance()
    assert q["git_commit"] is None and q["git_dirty"] is None


def test_the_wheel_ships_the_result_schema(tmp_path) -> None:
    """A non-editable install finds the schema too: the wheel carries it as ``neokd_bench/schema/``."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(root),
                    "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("neokd_bench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "neokd_bench/schema/result-1.schema.json" in names
    assert "neokd_bench/schema/result-2.schema.json" in names
    assert "neokd_bench/schema/result-3.schema.json" in names
    assert "neokd_bench/data/fashion_mnist_subset.npz" in names
    for f in ("leaderboard/site.py", "leaderboard/templates/index.html.j2", "leaderboard/static/style.css",
              "leaderboard/reported/neokd-paper.json", "leaderboard/reported/reported.schema.json",
              "leaderboard/schema/result-1.schema.json"):  # the board builds from an installed wheel too
        assert f"neokd_bench/{f}" in names
    assert not any(n.endswith(".pt") or "/results/" in n for n in names)  # data for CI stays in the repo
