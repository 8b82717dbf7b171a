"""`neokd-bench verify`: agrees on an honest result (and the board marks it verified), names the number on a doctored
one, refuses a checkpoint whose sha256 is not the result's."""

from __future__ import annotations

import json
import shutil

import pytest
from neokd_bench.cli import main
from neokd_bench.leaderboard.aggregate import load_results, make_entries, result_files
from neokd_bench.leaderboard.verified import SELF_REPORTED, VERIFIED, record_path, status

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def honest(trained_checkpoint, tmp_path_factory):
    """A result made by `neokd-bench eval` from the session's checkpoint (40 test images, PGD-2, one seed)."""
    folder = tmp_path_factory.mktemp("verify")
    ckpt = folder / "checkpoint.pt"
    shutil.copy(trained_checkpoint, ckpt)
    out = folder / "adv-s0.json"
    rc = main(["eval", str(ckpt), "--metrics", "anytime", "--test-limit", "40", "--steps", "2", "--seeds", "0",
               "--device", "cpu", "--no-plots", "--quiet", "--out", str(out)])
    assert rc == 0
    return out, ckpt


def _verify(result, ckpt, *extra):
    return main(["verify", str(result), "--checkpoint", ckpt, "--quiet", *extra])


def test_honest_result_is_verified_and_marked_on_the_board(honest, capsys, tmp_path):
    result, ckpt = honest
    copy = tmp_path / result.name
    shutil.copy(result, copy)
    assert status(copy, json.loads(copy.read_text())) == SELF_REPORTED  # no record yet
    assert _verify(copy, ckpt.resolve().as_uri()) == 0  # a file:// URL
    assert "verified:" in capsys.readouterr().out
    rec = json.loads(record_path(copy).read_text())
    assert rec["agrees"] is True and rec["numbers_compared"] == 3 * 2 + 2 * 2 * 3  # clean + 2 attacks, top-1/5
    assert rec["max_abs_diff"] <= rec["tolerance"] == 1 / 40
    assert result_files([tmp_path]) == [copy]  # the record is not a result file
    entry = make_entries(load_results([tmp_path]))[0]
    assert entry["verification"] == [VERIFIED] and entry["verified"] is True
    doc = json.loads(copy.read_text())
    doc["provenance"]["python"] = "edited after verification"
    copy.write_text(json.dumps(doc))
    assert status(copy, doc) == SELF_REPORTED  # the record describes the file as it was verified, not as edited


def test_doctored_result_names_the_number(honest, capsys, tmp_path):
    result, ckpt = honest
    doc = json.loads(result.read_text())
    top1 = doc["evaluation"]["anytime"]["adversarial"]["pgd:max-average"]["top1"]
    was = top1["per_seed"][0][1]
    now = was + 0.1 if was < 0.8 else was - 0.1
    top1["per_seed"][0][1] = top1["mean"][1] = now
    top1["avg"]["mean"] = top1["avg"]["per_seed"][0] = sum(top1["per_seed"][0]) / len(top1["per_seed"][0])
    doctored = tmp_path / "adv-s0.json"
    doctored.write_text(json.dumps(doc))
    assert _verify(doctored, str(ckpt)) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("disagrees: pgd:max-average top1 seed 0 exit 2: the result says ")
    assert f"{now:.4f}" in lines[0] and f"{was:.4f}" in lines[0]
    assert len(lines) == 2 and "1 of 18" in lines[1]
    assert not record_path(doctored).exists()


def test_checksum_mismatch_is_refused_before_any_work(honest, capsys, tmp_path):
    result, ckpt = honest
    other = tmp_path / "other.pt"
    other.write_bytes(ckpt.read_bytes() + b"\0")
    assert _verify(result, other.as_uri()) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checksum mismatch" in err and "other.pt" in err
    assert _verify(result, "http://example.invalid/x.pt") == 2  # only https downloads
    assert "only https://" in capsys.readouterr().err
