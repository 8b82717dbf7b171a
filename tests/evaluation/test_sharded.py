"""Evaluation under torchrun: two ranks share the batches and give the evaluation of one process."""

from __future__ import annotations

import json
from pathlib import Path

import neokd_bench as nb
import torch
from neokd_bench.evaluation import evaluate
from neokd_bench.presets import EvalProtocol

from ..conftest import run_ranks

# 72 test images in batches of 32: three batches, two on rank 0 and one (the short last one) on rank 1
# plus Square on each exit on the first 40 images (two batches, one on each rank), with the masking verdict
PROTO = EvalProtocol(attacks=("max-average", "average"), steps=2, attack_seeds=(0, 1), test_limit=72,
                     transfer_limit=40, budget_allocations=10, metrics=("anytime", "budgeted", "transfer"),
                     per_exit_attacks=("square",), per_exit_limit=40, square_queries=5, masking=True)


def _evaluate(weights: str, out: str) -> None:
    data = nb.load_dataset("fashion-mnist", source="bundled")
    model = nb.create_model("smallcnn", mean=list(data.mean), std=list(data.std))
    model.load_state_dict(torch.load(weights, weights_only=True))
    from neokd_bench.distributed import init_distributed, rank_and_world

    device = init_distributed(torch.device("cpu"))
    seen = []  # images through the model on this rank: the attacks' passes dominate
    model.register_forward_pre_hook(lambda _m, inputs: seen.append(len(inputs[0])))
    ev = evaluate(model, data, dataset_key="fashion-mnist", protocol=PROTO, device=device, progress=False,
                  batch_size=32, val_limit=72)
    rank = rank_and_world()[0]
    Path(f"{out}.{rank}.seen").write_text(str(sum(seen)))
    if rank == 0:
        Path(out).write_text(json.dumps(ev))


def _timeless(v):
    """The section without its wall-clock times."""
    if isinstance(v, dict):
        return {k: _timeless(u) for k, u in v.items() if k != "wall_s"}
    if isinstance(v, list):
        return [_timeless(u) for u in v]
    return v


def test_two_ranks_give_the_evaluation_of_one_process(clean_smallcnn, tmp_path):
    model, _, _ = clean_smallcnn
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    run_ranks(_evaluate, 1, str(weights), str(one))
    run_ranks(_evaluate, 2, str(weights), str(two))
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert a["n_test"] == 72 and a["transfer"]["n"] > 0
    assert a["anytime"]["adversarial"]["pgd:max-average"]["top1"]["mean"] != a["anytime"]["clean"]["top1"]["per_exit"]
    assert _timeless(b) == _timeless(a)
    # the per-sample bits themselves: clean, every attack and seed, every max-average candidate, the first-40 parts
    assert b["outcomes"] == a["outcomes"]
    recs = a["outcomes"]["records"]
    assert sum(r["candidate"] is not None for r in recs) == 2 * 3  # 2 seeds x 3 candidates
    assert [r["indices"] for r in recs if r["label"].startswith("square")] == [[[0, 40]]] * 6
    assert a["anytime"]["worst_case"]["n"] == 72 and "masking" in a
    alone = int(Path(f"{one}.0.seen").read_text())
    seen = [int(Path(f"{two}.{rank}.seen").read_text()) for rank in (0, 1)]
    # the work was shared: test batches 0 and 2 (40 images) on rank 0, batch 1 (32) on rank 1
    assert max(seen) < 0.8 * alone, (seen, alone)


def test_sharded_map_without_a_process_group_is_the_plain_loop():
    from neokd_bench.distributed import sharded_map

    assert sharded_map(lambda s: s * 2, range(0, 10, 3)) == [0, 6, 12, 18]


def test_sharded_map_gathers_in_order_over_three_ranks(tmp_path):
    run_ranks(_map_squares, 3, str(tmp_path / "out.json"))
    assert json.loads((tmp_path / "out.json").read_text()) == [[s, s * s] for s in range(7)]


def _map_squares(out: str) -> None:
    from neokd_bench.distributed import init_distributed, rank_and_world, sharded_map

    init_distributed(torch.device("cpu"))
    rank = rank_and_world()[0]
    got = sharded_map(lambda s: (s, s * s, rank), range(7))
    assert {r for _, _, r in got} == set(range(rank_and_world()[1]))  # the work was shared
    if rank == 0:
        Path(out).write_text(json.dumps([[s, q] for s, q, _ in got]))
