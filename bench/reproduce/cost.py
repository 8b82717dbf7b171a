"""The cost of a grid before it runs, from the work itself timed on the spot: a few real training steps of the
preset and one real evaluation batch, on the device given.

* **Training.** The shared trainer (:func:`neokd_bench.trainer.train`) runs the preset's model and a defense of
  the grid (``neokd`` when the grid has it, else its first), with the grid's training attack, its steps, the
  preset's precision and optimizer, for two short epochs on random images of the dataset's shape; the second
  epoch's images/s (the first pays the warm-up) times the run's ``epochs x train images`` is the estimate. On a
  CPU the batch is cut so that one step is at most :data:`MAX_STEP_FLOPS` (a smaller batch is no faster per
  image on a CPU, so the estimate errs high); on a GPU it is the preset's.
* **Evaluation.** :func:`neokd_bench.evaluation.evaluate` runs the preset's protocol (its attacks, PGD steps,
  one attack seed) on one batch of random test images (after an untimed two-image warm-up); seconds per image
  per attack and for the clean pass, times test images and attack seeds, give the anytime evaluation. The
  transferability matrix (single-exit PGD at every exit, as the max-average attack's steps are) is counted at
  the max-average attack's time per image. What is not timed on the batch is counted in whole forward passes
  (:func:`eval_parts`) at the average attack's time per pass: Table 8's extra ``eval`` attacks (AutoAttack at about
  :data:`AUTOATTACK_PASSES` passes per image, a rough figure), the reference protocol's per-exit APGD-DLR and
  Square (Square at its full query budget for every image: an upper bound, since a fooled image stops) and
  ``policy-pgd`` at the protocol's budgets.
  On a CPU the batch is cut to at most :data:`MAX_EVAL_FLOPS` of attack work.

Two estimates are printed: at the machine's load of the moment (wall clock: a run started now, at this load,
takes about that long) and on an idle machine (on a CPU, the process's CPU time over its torch threads, which a
loaded machine does not change much; on a GPU the two are the same). The README of ``benchmarks/`` compares them
with a measured run. fvcore's FLOPs and the forward-pass counts of
:func:`passes` are printed beside them for scale.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from .grids import SIZES, Grid

MAX_STEP_FLOPS = 2e10  # CPU: one timed training step at most this much work (forward-pass equivalents)
MAX_EVAL_FLOPS = 5e10  # CPU: the timed evaluation batch at most this much attack work
AUTOATTACK_PASSES = 6000
NUM_CLASSES = {"mnist": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100, "tiny-imagenet": 200,
               "imagenet": 1000}


@dataclass(frozen=True)
class Cost:
    model: str
    flops: int  # one forward pass of one image (fvcore)
    train_passes: float  # per run, whole-network forward passes (for scale)
    eval_passes: float
    train_s: float  # per run, from the timed training steps, at the load of the moment
    eval_s: float  # per run, from the timed evaluation batch, at the load of the moment
    train_images_per_s: float
    train_s_idle: float  # the same on an idle machine (CPU: CPU time over the torch threads)
    eval_s_idle: float
    device: str
    train_batch: int  # batch of the timed training steps
    eval_batch: int  # test images of the timed evaluation batch
    defense: str

    @property
    def seconds_per_run(self) -> float:
        return self.train_s + self.eval_s


def eval_parts(grid: Grid, preset, single_exits: float) -> dict[str, float]:
    """Whole-network forward passes of one run's evaluation under ``preset``, per part of the protocol:
    ``anytime`` (the PGD attacks, every attack seed, and the clean pass), ``transfer``, ``eval_attacks`` (Table 8's
    extra attacks), ``per_exit`` (the reference protocol's attacks of other kinds on each exit alone, on the first
    images: APGD a forward and a backward per step, Square one forward per query, an upper bound since fooled
    samples leave) and ``policy_pgd`` (one PGD on the whole network per budget of the curve). ``single_exits`` is
    the cost of one step on every exit alone, in whole passes."""
    _, n_test = SIZES[grid.dataset]
    ev = preset.eval
    n_test = min(n_test, ev.test_limit or n_test)
    seeds = len(ev.attack_seeds)
    per_attack = sum(single_exits if o == "max-average" else 1 for o in ev.attacks)
    parts = {"anytime": n_test * seeds * (3 * ev.steps * per_attack + 1), "transfer": 0.0, "eval_attacks": 0.0,
             "per_exit": 0.0, "policy_pgd": 0.0}
    if "transfer" in ev.metrics:
        parts["transfer"] = min(n_test, ev.transfer_limit or n_test) * single_exits * ev.steps * 3
    for attack in grid.eval_attacks:  # Table 8's `eval` (one attack seed each)
        name = attack.split(":")[0]
        steps = 100 if name == "pgd" else 50
        parts["eval_attacks"] += n_test * (AUTOATTACK_PASSES if name == "autoattack" else 3 * steps)
    n_lim = min(n_test, getattr(ev, "per_exit_limit", None) or n_test)
    for name in getattr(ev, "per_exit_attacks", ()):
        per = ev.square_queries if name == "square" else 3 * ev.apgd_steps
        parts["per_exit"] += n_lim * seeds * per * single_exits
    if getattr(ev, "budgeted_policy_pgd", False) and "budgeted" in ev.metrics:
        n_budgets = 100 if ev.policy_budgets == "all" else int(ev.policy_budgets)
        parts["policy_pgd"] = n_test * seeds * n_budgets * 3 * ev.steps
    return {k: float(v) for k, v in parts.items()}


def passes(grid: Grid, preset, single_exits: float) -> tuple[float, float]:
    """(training, evaluation) whole-network forward passes summed over a run of ``grid`` under ``preset``;
    ``single_exits`` is the cost of one single-exit attack step on every exit, in whole passes."""
    n_train, _ = SIZES[grid.dataset]
    n_train = min(n_train, preset.train_limit or n_train)
    a_train = single_exits if grid.train_attack == "max-average" else 1
    train = preset.epochs * n_train * 3 * (preset.train_steps * a_train + 2)
    return float(train), sum(eval_parts(grid, preset, single_exits).values())


def _sizes(grid: Grid, preset) -> tuple[int, int, int]:
    n_train, n_test = SIZES[grid.dataset]
    n_train = min(n_train, preset.train_limit or n_train)
    n_test = min(n_test, preset.eval.test_limit or n_test)
    return n_train, n_test, min(n_test, preset.eval.transfer_limit or n_test)


def _random_bundle(model, n_classes: int, n: int, seed: int = 0):
    import torch

    from ..data.base import DatasetBundle, TensorImageDataset

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *model.input_size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g)
    ds = TensorImageDataset(x, y)
    return DatasetBundle(name="random", train=ds, val=ds, test=ds, num_classes=n_classes,
                         input_size=tuple(model.input_size), mean=[0.5] * model.input_size[0],
                         std=[0.25] * model.input_size[0], source="random")


def _threads(device: str) -> int:
    import torch

    return torch.get_num_threads() if not device.startswith("cuda") else 1


def time_training(grid: Grid, preset, model, device: str, batch: int, batches: int = 2) -> tuple[float, float, str]:
    """Images/s of the shared trainer over ``batches`` batches, after one untimed warm-up step: at the machine's
    current load (wall clock) and on an idle machine (on a CPU: the process's CPU time over its torch threads;
    on a GPU the same as the wall clock); and the defense timed."""
    import tempfile

    import neokd_bench as nb

    from ..trainer import TrainConfig, train

    name = "neokd" if "neokd" in grid.defenses else grid.defenses[0]
    defense = nb.create_defense(name, train_attack=grid.train_attack)
    n_cls = NUM_CLASSES[grid.dataset]
    defense.setup(dataset=grid.dataset, num_exits=model.num_exits, num_classes=n_cls, seed=0)
    data = _random_bundle(model, n_cls, batch * batches).train
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=preset.lr, momentum=preset.momentum,
                      weight_decay=preset.weight_decay, seed=0, device=device, amp=preset.amp,
                      grad_clip_norm=preset.grad_clip_norm)
    with tempfile.TemporaryDirectory(prefix="neokd-cost-") as tmp:
        train(model, defense, data, dataclasses.replace(cfg, train_limit=batch), out_dir=tmp, progress=False)
        cpu = time.process_time()
        hist = train(model, defense, data, cfg, out_dir=tmp, progress=False)["history"]
        cpu = time.process_time() - cpu
    wall = float(hist[-1]["imgs_per_s"])
    idle = len(data) / (cpu / _threads(device)) if not device.startswith("cuda") and cpu > 0 else wall
    return wall, max(wall, idle), name


def time_evaluation(grid: Grid, preset, model, device: str, batch: int) -> tuple[dict[str, float], float]:
    """Seconds per test image of the clean pass and of each attack of the preset's protocol (one seed), at the
    current load; and the ratio of idle-machine time to that (CPU time over torch threads, per wall second)."""
    from ..evaluation import evaluate

    n_cls = NUM_CLASSES[grid.dataset]
    # the PGD attacks only: the per-exit attacks of other kinds and policy-pgd are counted in passes (on an
    # untrained model and random images Square stops at once, which would time nothing)
    proto = dataclasses.replace(preset.eval, attack_seeds=preset.eval.attack_seeds[:1], metrics=("anytime",),
                                per_exit_attacks=(), masking=False)
    evaluate(model, _random_bundle(model, n_cls, 2, seed=1), dataset_key=grid.dataset,
             protocol=dataclasses.replace(proto, test_limit=2), device=device, metrics=("anytime",), progress=False)
    cpu, wall = time.process_time(), time.perf_counter()
    ev = evaluate(model, _random_bundle(model, n_cls, batch, seed=2), dataset_key=grid.dataset,
                  protocol=dataclasses.replace(proto, test_limit=batch), device=device, metrics=("anytime",),
                  progress=False, batch_size=batch)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    per = {"clean": ev["wall_s"]["clean_s"] / batch}
    for label, adv in ev["anytime"]["adversarial"].items():
        per[label] = adv["wall_s"] / batch
    idle = min(1.0, cpu / _threads(device) / wall) if not device.startswith("cuda") and wall > 0 else 1.0
    return per, idle


def measure(grid: Grid, device: str = "cpu", threads: int | None = None) -> Cost:
    """fvcore FLOPs of the preset's model, and the seconds of one run from real training steps and one real
    evaluation batch timed now on ``device``; on a CPU with ``threads`` torch threads (a run of ``--jobs N`` gets
    cores // N), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    if threads and not device.startswith("cuda"):
        torch.set_num_threads(threads)
    try:
        return _measure(grid, device)
    finally:
        torch.set_num_threads(before)


def _measure(grid: Grid, device: str) -> Cost:
    import neokd_bench as nb

    from ..flops import exit_path_flops, full_forward_flops
    from ..presets import train_preset

    preset = train_preset(grid.dataset, grid.preset)
    model = nb.create_model(preset.model, num_classes=NUM_CLASSES[grid.dataset], **dict(preset.model_kwargs))
    flops = full_forward_flops(model)
    single_exits = sum(exit_path_flops(model)) / flops
    train_passes, eval_passes = passes(grid, preset, single_exits)
    n_train, n_test, n_transfer = _sizes(grid, preset)
    cpu = not device.startswith("cuda")
    a_train = single_exits if grid.train_attack == "max-average" else 1
    step_passes = 3 * (preset.train_steps * a_train + 2)
    train_batch = max(2, min(preset.batch_size, int(MAX_STEP_FLOPS // (flops * step_passes)))) if cpu \
        else preset.batch_size
    ev = preset.eval
    attack_passes = sum(3 * ev.steps * (single_exits if o == "max-average" else 1) for o in ev.attacks) or 1
    eval_batch = max(2, min(256, int(MAX_EVAL_FLOPS // (flops * attack_passes)))) if cpu else 256
    eval_batch = min(eval_batch, n_test)

    imgs_per_s, idle_per_s, defense = time_training(grid, preset, model, device, train_batch)
    train_s = preset.epochs * n_train / imgs_per_s
    per, eval_idle = time_evaluation(grid, preset, model, device, eval_batch)
    seeds = len(ev.attack_seeds)
    eval_s = n_test * (per["clean"] + seeds * sum(v for k, v in per.items() if k != "clean"))
    if "transfer" in ev.metrics:
        eval_s += n_transfer * per.get("pgd:max-average", max(per.values()))
    # the parts not timed on the batch (Table 8's extra attacks, the per-exit attacks of other kinds, policy-pgd)
    # in whole passes at the timed average attack's seconds per pass
    parts = eval_parts(grid, preset, single_exits)
    per_pass = per.get("pgd:average", max(per.values())) / (3 * ev.steps)
    eval_s += per_pass * (parts["eval_attacks"] + parts["per_exit"] + parts["policy_pgd"])
    return Cost(preset.model, flops, train_passes, eval_passes, train_s, eval_s, imgs_per_s,
                preset.epochs * n_train / idle_per_s, eval_s * eval_idle, device, train_batch, eval_batch, defense)
