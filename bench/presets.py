"""Presets: every protocol number in one place, with its source (airbench style).

* :data:`THREAT` - the L-inf threat model per dataset (paper Sec. 4.1, App. A.2; defined in
  :mod:`neokd_bench.contract`, shared with the board).
* :data:`TRAIN_PRESETS` - ``(dataset, tag) -> TrainPreset``. ``paper`` follows App. A.1; ``smoke`` runs in
  minutes on a 2-core CPU with the bundled Fashion-MNIST subset.
* :func:`attack_settings` - PGD-7 for training, PGD-50 / PGD-100 for testing.

Gamma (the per-exit KD weight of NEO-KD, App. A.2) is per dataset and lives in :data:`GAMMA`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .contract import THREAT, Threat
from .errors import UsageError

# The threat model per dataset is shared with the board, which imports no torch: it lives in neokd_bench.contract.

# Per-exit KD weight gamma of NEO-KD, paper App. A.2. Datasets not in the paper use all ones.
GAMMA: dict[str, tuple[float, ...]] = {
    "mnist": (1, 1, 1),
    "fashion-mnist": (1, 1, 1),
    "cifar10": (1, 1, 1),
    "cifar100": (1, 1, 1, 1.5, 1.5, 1.5, 1.5),
    "tiny-imagenet": (1, 1, 1, 1.5, 1.5),
    "imagenet": (1, 1, 1, 1.5, 1.5),
}


def threat(dataset: str) -> Threat:
    if dataset not in THREAT:
        raise UsageError(f"no threat model for dataset {dataset!r}; pass --eps and --step-size explicitly")
    return THREAT[dataset]


def gamma_for(dataset: str, num_exits: int) -> tuple[float, ...]:
    g = GAMMA.get(dataset)
    if g is None or len(g) != num_exits:
        return tuple([1.0] * num_exits)
    return tuple(float(v) for v in g)


def attack_settings(dataset: str, kind: str = "test") -> dict[str, Any]:
    """PGD settings: ``train`` = PGD-7, ``test`` = PGD-50, ``test100`` = PGD-100 (paper Sec. 4.1)."""
    steps = {"train": 7, "test": 50, "test100": 100}
    if kind not in steps:
        raise UsageError(f"unknown attack preset {kind!r}; use one of {sorted(steps)}")
    t = threat(dataset)
    return {"eps": t.eps, "step_size": t.step_size, "steps": steps[kind], "random_start": True}


@dataclass(frozen=True)
class EvalProtocol:
    """What `neokd-bench run` evaluates after training."""

    attacks: tuple[str, ...] = ("max-average", "average")  # PGD objectives
    steps: int = 50  # PGD-50 at test time (paper Sec. 4.1)
    attack_seeds: tuple[int, ...] = (0, 1, 2)  # App. A.2: 3 seeds for PGD-50
    test_limit: int | None = None  # evaluate on the first N test images (None = all)
    metrics: tuple[str, ...] = ("anytime", "budgeted", "transfer")
    transfer_limit: int | None = 1000  # samples for the transferability matrix
    budget_allocations: int = 100  # App. A.3
    policy: str = "max-softmax"  # exit policy of budgeted prediction (neokd_bench.evaluation.policies)
    budget_index: int | None = None  # efficiency metric's allocation (None: closest to an equal share per exit)
    # budgets, spread over the curve, at which policy-pgd is run (efficiency metric); "all": every allocation
    policy_budgets: int | str = 5
    # Attacks of other kinds run on each exit alone (as in AutoAttack), joining the worst case per exit on the first
    # per_exit_limit test images (None: all); budgets apgd_steps (APGD iterations) and square_queries.
    per_exit_attacks: tuple[str, ...] = ()
    per_exit_limit: int | None = 500
    apgd_steps: int = 100
    square_queries: int = 5000
    masking: bool = False  # record the masking verdict (evaluation.masking) from the stored outcomes
    budgeted_policy_pgd: bool = False  # budgeted curve under policy-pgd at the policy_budgets (curves["policy-pgd"])


@dataclass(frozen=True)
class TrainPreset:
    model: str
    epochs: int
    batch_size: int
    lr: float
    milestones: tuple[int, ...]  # epochs at which lr is divided by 10
    momentum: float = 0.9
    weight_decay: float = 5e-4
    train_steps: int = 7  # PGD-7 training attack
    train_limit: int | None = None  # first N training images (None = all)
    grad_clip_norm: float | None = None  # global gradient-norm clipping (None = none, as the paper)
    data_source: str = "auto"
    # Training precision (TrainConfig.amp): "auto" = bf16 where the device computes it natively (GPU presets);
    # the CPU presets (smoke, cpu) and the committed references stay fp32 ("none"), so that their numbers do
    # not depend on which CPU made them.
    amp: str = "none"
    eval: EvalProtocol = field(default_factory=EvalProtocol)
    model_kwargs: tuple[tuple[str, Any], ...] = ()
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_kwargs"] = dict(self.model_kwargs)
        return d

    def override(self, **kw: Any) -> TrainPreset:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


# The reference protocol beyond the paper's PGD (docs/design.md, "worst case per exit"): on each exit alone,
# APGD-DLR and Square as in AutoAttack's standard version (100 iterations, 5,000 queries) on the first 500 test
# images, joining the worst case per exit there; the masking verdict from the stored outcomes; and the budgeted
# curve under policy-pgd (the attacker who knows the thresholds) at policy_budgets budgets.
REFERENCE_PROTOCOL: dict[str, Any] = {"per_exit_attacks": ("apgd-dlr", "square"), "per_exit_limit": 500,
                                      "apgd_steps": 100, "square_queries": 5000, "masking": True,
                                      "budgeted_policy_pgd": True, "policy_budgets": 5}
# The CPU presets (smoke, cpu) cut Square to 1,000 queries and policy-pgd to 3 budgets: measured on the gate
# checkpoint (SmallCNN, 100 test images, 1 thread, CPU seconds), Square-1000 on exit 3 cost 18.0 s against 4.8 s
# for PGD-20 max-average and 5.1 s for APGD-DLR-100, so AutoAttack's 5,000 queries on 3 exits would make a CPU
# evaluation about 10x longer; with these budgets it stays within 3x (the numbers are in the result's wall_s).
CPU_REFERENCE: dict[str, Any] = {**REFERENCE_PROTOCOL, "square_queries": 1000, "policy_budgets": 3}

# Smoke evaluation: PGD-50 (the paper's test attack) on the first 500 test images (class-balanced), one
# attack seed (the spread across seeds comes from the training seeds), transferability on <= 200 samples; plus
# the reference protocol's per-exit attacks, masking verdict and policy-pgd curve.
_SMOKE_EVAL = EvalProtocol(attacks=("max-average", "average"), steps=50, attack_seeds=(0,),
                           test_limit=500, transfer_limit=200, budget_allocations=100, **CPU_REFERENCE)
_PAPER_EVAL = EvalProtocol(**REFERENCE_PROTOCOL)

TRAIN_PRESETS: dict[tuple[str, str], TrainPreset] = {
    ("mnist", "paper"): TrainPreset("smallcnn", 150, 128, 0.01, (50,), amp="auto", eval=_PAPER_EVAL,
                                    source="paper App. A.1"),
    ("fashion-mnist", "paper"): TrainPreset(
        "smallcnn", 150, 128, 0.01, (50,), amp="auto", eval=_PAPER_EVAL,
        source="MNIST protocol of paper App. A.1 (F-MNIST not in the paper)"),
    # Smoke: minutes on a 2-core CPU. Real data (the bundled subset), real PGD-7 max-average training on
    # 4,096 images for 3 epochs, PGD-50 evaluation on 500 test images. lr 0.05 (not the paper's 0.01)
    # because 3 epochs is all there is; decayed 10x for the last epoch. At that lr SKD diverged to NaN in
    # its third epoch (seed 0), so the smoke preset clips the global gradient norm at 5, for every defense.
    ("fashion-mnist", "smoke"): TrainPreset(
        "smallcnn", 3, 128, 0.05, (2,), train_limit=4096, grad_clip_norm=5.0, data_source="bundled",
        eval=_SMOKE_EVAL,
        source="CPU smoke preset (not a paper setting)"),
    # CPU reproduction: about 10-25 minutes per run on one core of a 2-core CPU. The whole bundled
    # training split (10,000 images), 5 epochs, SGD at lr 0.01 (the paper's MNIST lr), momentum 0.9 and the
    # paper's weight decay, no schedule and no clipping; PGD-7 max-average training as always. Evaluation:
    # PGD-20 max-average and average on all 2,000 bundled test images, one attack seed (the spread comes from
    # the training seeds); budgeted thresholds from the 2,000 bundled validation images; transferability on
    # up to 1,000 samples.
    ("fashion-mnist", "cpu"): TrainPreset(
        "smallcnn", 5, 128, 0.01, (), data_source="bundled",
        eval=EvalProtocol(attacks=("max-average", "average"), steps=20, attack_seeds=(0,), test_limit=None,
                          transfer_limit=1000, budget_allocations=100, **CPU_REFERENCE),
        source="CPU reproduction preset (not a paper setting)"),
    ("cifar10", "paper"): TrainPreset("msdnet_cifar10", 150, 128, 0.1, (75, 115), amp="auto", eval=_PAPER_EVAL,
                                      source="paper App. A.1"),
    ("cifar100", "paper"): TrainPreset(
        "msdnet_cifar100", 150, 128, 0.1, (75, 115), amp="auto", eval=_PAPER_EVAL, source="paper App. A.1"),
    ("tiny-imagenet", "paper"): TrainPreset(
        "msdnet_tinyimagenet", 150, 128, 0.1, (50, 100), amp="auto", eval=_PAPER_EVAL, source="paper App. A.1"),
    # ImageNet: the paper fine-tunes a pretrained MSDNet for 10 epochs at constant lr 0.001.
    ("imagenet", "paper"): TrainPreset("msdnet_imagenet", 10, 128, 0.001, (), amp="auto", eval=_PAPER_EVAL,
                                       source="paper App. A.1"),
}


# Presets that fine-tune: `run` refuses them without --init, with this line saying where the weights come from.
NEEDS_INIT: dict[tuple[str, str], str] = {
    ("imagenet", "paper"): "pass --init with the ImageNet MSDNet (block=5, step=4) from the README of "
                           "github.com/kalviny/MSDNet-PyTorch (\"Pre-trained MSDNet Models on ImageNet\"), and "
                           "--val-index with the index.pth published beside it",
}


def train_preset(dataset: str, tag: str) -> TrainPreset:
    key = (dataset, tag)
    if key not in TRAIN_PRESETS:
        have = sorted(t for d, t in TRAIN_PRESETS if d == dataset)
        hint = f"use --preset {' or --preset '.join(have)}" if have else "pass --model and --epochs explicitly"
        raise UsageError(f"no preset {tag!r} for dataset {dataset!r}; {hint}")
    return TRAIN_PRESETS[key]
