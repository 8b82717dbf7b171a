"""Attack strength on a trained checkpoint: max-average PGD-7 in fp32 and in bf16 autocast, and PGD-50.

Prints the per-exit robust accuracy under each, the largest per-exit gap between the bf16 and the fp32
PGD-7 (the target is at most 1 point) and whether PGD-50 is at least as strong as PGD-7: lower accuracy
averaged over exits, and no exit more than one sample higher (max-average keeps, per sample, the candidate
with the largest loss averaged over exits, so one exit alone may come out a sample less attacked).
The same checks run, on a smaller budget, in ``tests/attacks/test_trained.py``. Example (after ``make run``)::

    .venv/bin/python scripts/attack_strength.py runs/adv-fashion-mnist-smoke-s0/checkpoint.pt --n 500

Threat model: the dataset's (``neokd_bench.presets.threat``). Attack seed 0, batch 250, eval mode.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    import neokd_bench as nb
    from neokd_bench.evaluation.masking import attacked_accuracy, per_exit_accuracy
    from neokd_bench.presets import threat
    from neokd_bench.trainer import load_checkpoint, model_from_checkpoint, resolve_device

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="checkpoint.pt written by `neokd-bench run`")
    p.add_argument("--n", type=int, default=500, help="test images (default 500)")
    p.add_argument("--seed", type=int, default=0, help="attack seed (default 0)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1, e.g. --n 500")

    state = load_checkpoint(args.checkpoint)
    device = resolve_device(args.device)
    model = model_from_checkpoint(state).to(device).eval()
    bundle = nb.load_dataset(state["dataset"], root=args.data_root or state.get("data_root"),
                             source=state.get("data_source") or "auto")
    x, y = bundle.test.subset(args.n).tensors()
    x, y = x.to(device), y.to(device)
    t = threat(state["dataset"])

    def pgd(steps: int, **kw: object) -> list[float]:
        attack = nb.create_attack("pgd", eps=t.eps, step_size=t.step_size, steps=steps, objective="max-average",
                                  seed=args.seed, **kw)
        return attacked_accuracy(model, attack, x, y)

    rows = {
        "clean": per_exit_accuracy(model, x, y),
        "PGD-7 fp32": pgd(7),
        "PGD-7 bf16": pgd(7, amp_dtype="bfloat16"),
        "PGD-50 fp32": pgd(50),
    }
    print(f"{args.checkpoint}: {state['model_name']} on {state['dataset']}, {len(x)} test images, "
          f"eps {t.eps:.4g}, step {t.step_size:.4g}, max-average, seed {args.seed}, {device}")
    print("per-exit accuracy (%): " + " | ".join(f"{k}: " + " / ".join(f"{100 * a:.1f}" for a in v)
                                               for k, v in rows.items()))
    gap = max(abs(a - b) for a, b in zip(rows["PGD-7 bf16"], rows["PGD-7 fp32"]))
    a7, a50 = rows["PGD-7 fp32"], rows["PGD-50 fp32"]
    stronger = sum(a50) < sum(a7) + 1e-9 and all(b <= a + 1 / len(x) + 1e-9 for a, b in zip(a7, a50))
    verdict = "within" if gap <= 0.01 else "MORE THAN"
    print(f"bf16 vs fp32 PGD-7: largest per-exit gap {100 * gap:.1f} points ({verdict} 1)")
    print(f"PGD-50 vs PGD-7, mean over exits: {100 * sum(a50) / len(a50):.2f} vs {100 * sum(a7) / len(a7):.2f} %; "
          f"at least as strong (lower mean, no exit more than one sample higher): {'yes' if stronger else 'NO'}")
    return 0 if gap <= 0.01 and stronger else 1


if __name__ == "__main__":
    sys.exit(main())
