"""Per-sample outcomes and the worst case per exit (bench/evaluation/outcomes.py).

The worst case is recomputed by hand, from the stored bits only, on a hand-weighted two-exit model whose
robustness at each exit can be read off its inputs; and on every committed result that records it, the worst
case is no higher than any attack's accuracy and every stored bit agrees with the numbers beside it."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from neokd_bench.evaluation import evaluate
from neokd_bench.evaluation.outcomes import from_ranges, pack_bits, to_ranges, unpack_bits, worst_case
from neokd_bench.models.base import MultiExitModel
from neokd_bench.presets import EvalProtocol
from neokd_bench.results import validate_result

ROOT = Path(__file__).resolve().parents[2]
EPS = 0.1  # the fashion-mnist threat model


class HandExits(MultiExitModel):
    """Two exits on a 1x1x2 image, two classes: exit ``k`` says class 1 with logit ``10 (x_k - 0.5)`` (class 0:
    logit 0), so exit ``k`` reads pixel ``k`` only. A sample of class 1 is robust at exit ``k`` against an
    eps-ball attack exactly when ``x_k - 0.5 > eps``."""

    def __init__(self) -> None:
        super().__init__(num_exits=2, num_classes=2, input_size=(1, 1, 2), mean=[0.0], std=[1.0])
        self.scale = torch.nn.Parameter(torch.tensor(10.0))

    def forward_exits(self, x: torch.Tensor, upto: int) -> list[torch.Tensor]:
        flat = x.flatten(1)
        outs = []
        for k in range(upto + 1):
            z = self.scale * (flat[:, k] - 0.5)
            outs.append(torch.stack([torch.zeros_like(z), z], dim=1))
        return outs


# pixel pairs; every label is 1. Robust at exit k iff x_k > 0.6; clean-right iff x_k > 0.5.
PIXELS = [(0.7, 0.7), (0.55, 0.7), (0.7, 0.55), (0.55, 0.55), (0.3, 0.7), (0.9, 0.58)]


def _hand_eval(attacks):
    x = torch.tensor(PIXELS, dtype=torch.float32).view(-1, 1, 1, 2)
    y = torch.ones(len(PIXELS), dtype=torch.long)
    split = list(zip(x, y))
    bundle = SimpleNamespace(test=split, val=split)
    return evaluate(HandExits().eval(), bundle, dataset_key="fashion-mnist", device="cpu", metrics=("anytime",),
                    protocol=EvalProtocol(test_limit=None, metrics=("anytime",), attack_seeds=(0,)),
                    attacks=attacks, progress=False, batch_size=4)


def _bits(rec: dict, n: int, L: int) -> np.ndarray:
    """Decode a record by hand (independent of the module): base64, unpack, reshape row-major."""
    raw = np.frombuffer(base64.b64decode(rec["bits"]), dtype=np.uint8)
    return np.unpackbits(raw)[: n * L].astype(bool).reshape(n, L)


def test_pack_and_ranges_round_trip():
    rng = np.random.default_rng(0)
    for n, L in ((0, 3), (1, 1), (7, 3), (500, 7)):
        t = rng.random((n, L)) < 0.5
        assert (unpack_bits(pack_bits(t), n, L) == t).all()
    idx = [0, 1, 2, 7, 8, 3]
    assert to_ranges(idx) == [[0, 3], [7, 9], [3, 4]]
    assert from_ranges(to_ranges(idx)).tolist() == idx
    with pytest.raises(ValueError):
        unpack_bits(pack_bits(np.ones((3, 3), bool)), 30, 3)


def test_worst_case_by_hand_on_a_hand_weighted_model():
    # max-average only, no random start: candidate k moves pixel k alone (the other pixel has zero gradient)
    ev = _hand_eval([{"name": "pgd", "objective": "max-average", "steps": 6, "random_start": False}])
    out = ev["outcomes"]
    n, L = out["n"], out["num_exits"]
    assert (n, L) == (len(PIXELS), 2)
    # by hand, from the inputs: robust at exit k iff pixel k is more than eps above the boundary
    expected = np.array([[p > 0.5 + EPS for p in px] for px in PIXELS])
    # by hand, from the stored bits: AND of clean and of every record
    robust = _bits(out["clean"], n, L).copy()
    for rec in out["records"]:
        assert from_ranges(rec["indices"]).tolist() == list(range(n))
        robust &= _bits(rec, n, L)
    assert (robust == expected).all(), (robust, expected)
    wc = ev["anytime"]["worst_case"]
    assert wc["top1"]["mean"] == pytest.approx(expected.mean(axis=0).tolist())
    assert wc["n"] == n and wc["seeds"] == [0] and wc["top1"]["std"] == [0.0, 0.0]
    assert {p["label"] for p in wc["parts"]} == {"clean", "pgd:max-average", "pgd:max-average[exit:0]",
                                                 "pgd:max-average[exit:1]"}
    # max-average keeps one candidate per sample, so it misses what the other candidate found: on sample 3
    # (both pixels vulnerable) it cannot fool both exits, and the worst case is strictly lower at one exit
    ma = ev["anytime"]["adversarial"]["pgd:max-average"]["top1"]["mean"]
    assert all(w <= m for w, m in zip(wc["top1"]["mean"], ma))
    assert any(w < m for w, m in zip(wc["top1"]["mean"], ma))
    # the selected example is one of the candidates: its row equals one candidate's row, sample by sample
    recs = {r["candidate"]: _bits(r, n, L) for r in out["records"]}
    assert all(any((recs[None][i] == recs[f"exit:{c}"][i]).all() for c in range(L)) for i in range(n))


def test_limited_attacks_join_where_they_ran():
    ev = _hand_eval([{"name": "pgd", "objective": "average", "steps": 6, "random_start": False},
                     {"name": "pgd", "objective": "exit:1", "steps": 6, "random_start": False, "limit": 2,
                      "label": "first-two"}])
    assert ev["attacks"]["first-two"]["n"] == 2 and ev["anytime"]["limited"]["first-two"]["n"] == 2
    assert "first-two" not in ev["anytime"]["adversarial"]
    parts = {p["label"]: p for p in ev["anytime"]["worst_case"]["parts"]}
    assert parts["first-two"]["n"] == 2 and parts["pgd:average"]["n"] == len(PIXELS)
    rec = next(r for r in ev["outcomes"]["records"] if r["label"] == "first-two")
    assert rec["indices"] == [[0, 2]]


def test_an_attack_beyond_the_threat_model_does_not_join():
    ev = _hand_eval([{"name": "pgd", "objective": "average", "steps": 6, "random_start": False},
                     {"name": "pgd", "objective": "average", "steps": 6, "random_start": False, "eps": 0.5,
                      "step_size": 0.1,
                      "label": "too-big"}])
    labels = {p["label"] for p in ev["anytime"]["worst_case"]["parts"]}
    assert "too-big" not in labels and "pgd:average" in labels
    assert ev["anytime"]["adversarial"]["too-big"]["top1"]["mean"] == [0.0, 0.0]
    assert min(ev["anytime"]["worst_case"]["top1"]["mean"]) > 0


def _committed_results() -> list[Path]:
    folders = ("leaderboard/results", "leaderboard/efficiency", "leaderboard/gate")
    return sorted(p for folder in folders
                  for p in (ROOT / folder).rglob("*.json") if p.name not in ("attack-gate.json", "summary.json"))


def check_outcomes_agree(doc: dict) -> None:
    """Every anytime number of ``doc`` that the outcomes cover, recomputed from the bits; the worst case from the
    bits; and the worst case no higher than any attack's accuracy at any exit."""
    ev = doc["evaluation"]
    out, any_ = ev["outcomes"], ev["anytime"]
    L = out["num_exits"]
    clean = _bits(out["clean"], len(from_ranges(out["clean"]["indices"])), L)
    assert clean.mean(axis=0) == pytest.approx(any_["clean"]["top1"]["per_exit"])
    for section in ("adversarial", "limited"):
        for label, entry in (any_.get(section) or {}).items():
            for seed, row in zip(entry["seeds"], entry["top1"]["per_seed"]):
                (rec,) = [r for r in out["records"] if r["label"] == label and r["seed"] == seed
                          and r["candidate"] is None]
                t = _bits(rec, len(from_ranges(rec["indices"])), L)
                assert t.mean(axis=0) == pytest.approx(row)
            assert all(w <= a + 1e-12 for w, a in zip(any_["worst_case"]["top1"]["mean"], entry["top1"]["mean"])
                       ) or section == "limited" or label not in {p["label"] for p in any_["worst_case"]["parts"]}
    assert worst_case(out, ev["attacks"]) == any_["worst_case"]


@pytest.mark.parametrize("path", _committed_results(), ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_results_worst_case_is_below_every_attack(path):
    doc = json.loads(path.read_text())
    if "outcomes" not in doc.get("evaluation", {}):
        pytest.skip("made before per-sample outcomes were recorded")
    validate_result(doc)
    check_outcomes_agree(doc)


def test_fresh_result_is_schema_3_and_agrees_with_its_bits(trained_checkpoint, tmp_path):
    from neokd_bench.cli import main

    out = tmp_path / "r.json"
    assert main(["eval", str(trained_checkpoint), "--metrics", "anytime", "--steps", "2", "--seeds", "0,1",
                 "--test-limit", "40", "--quiet", "--device", "cpu", "--no-plots", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == "3"
    validate_result(doc)
    check_outcomes_agree(doc)
    assert doc["evaluation"]["anytime"]["worst_case"]["seeds"] == [0, 1]
