"""The defense contract shared by every registered defense (docs/design.md, "Contracts").

A defense owns two things: how its training adversarial examples are made, and its training loss over
the clean and adversarial outputs of all exits. The shared trainer (``neokd_bench.trainer``) owns
everything generic (data, optimizer, schedule, autocast, checkpoints, seeds, logging); a defense never
writes a training loop.

Life cycle, as the trainer drives it::

    defense = neokd_bench.create_defense("neokd", alpha=3.0)      # config fields, paper defaults
    defense.setup(dataset="cifar10", num_exits=3, num_classes=10, seed=0)   # resolves eps, gamma, ...
    for epoch in range(start, epochs):
        defense.start_epoch(epoch)
        for x, y, index in loader:                                  # index: dataset indices (TEAT needs them)
            loss, parts, x_adv = defense.training_step(model, x, y, index=index)
            loss.backward(); ...
    defense.state_dict() / defense.load_state_dict(...)             # checkpoint any per-run state

Every field of :attr:`Defense.config` is a frozen-dataclass field whose default is the paper's; fields
left ``None`` are resolved per dataset in :meth:`Defense.setup` (eps and step size from
:func:`neokd_bench.presets.threat`). :meth:`Defense.describe` returns the resolved config, the
assumptions and the source, and goes into every result file.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..attacks.base import Objective
from ..config import coerce_config
from ..errors import UsageError

ATTACK_MODES = ("eval", "train")
AMP_ALIASES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}


@dataclass(frozen=True)
class DefenseConfig:
    """Fields every defense shares: how its training adversarial examples are made.

    train_attack: PGD objective over exits, ``max-average`` (paper Eq. 2, the paper's training attack),
        ``average`` (Eq. 3, Appendix C) or ``exit:K`` (0-based single exit, Eq. 1).
    eps, step_size: L-inf radius and PGD step; ``None`` resolves per dataset in ``setup``.
    steps: PGD steps (PGD-7 for training, paper Sec. 4.1).
    attack_mode: model mode while the attack runs (docs/design.md: eval); the attack restores the mode.
    attack_amp: autocast dtype for the attack's forward passes (``None``, ``bfloat16``, ``float16``).
    attack_fold_bn: when the attack runs in eval mode, run it on a copy of the model with BatchNorm folded
        into the preceding convolutions (``fold_bn`` of :mod:`neokd_bench.attacks.base`): the same function
        up to float rounding, and a faster attack on BatchNorm networks (MSDNet on CPU: PGD-7 max-average about
        1.5x instead of 1.25x the naive reference, ``benchmarks/bench_attacks.py``). On by default for
        training attacks (this project's choice; evaluation attacks do not fold unless asked), on a CPU only:
        on a GPU the per-step copy costs more than it saves (the 7-exit MSDNet's training attack at 0.83x on
        an NVIDIA H200), so there it never folds. Ignored with ``attack_mode="train"``, where BatchNorm uses
        batch statistics.
    attack_cuda_graph: on a GPU, replay the eval-mode training attack as a CUDA graph (``cuda_graph`` of
        :class:`~neokd_bench.attacks.pgd.PGD`, :mod:`neokd_bench.attacks.graphs`): ``auto`` (default) for models
        that declare themselves safe for capture (this project's SmallCNN and MSDNet), ``on`` for any model,
        ``off`` never. The same function of the same random starts; it removes the host's launch overhead,
        which dominated the step on an NVIDIA H200 (``benchmarks/README.md``, "GPU figures"). No effect on a CPU.
    keyed_starts: key each training sample's random start by its index in the training set
        (:class:`~neokd_bench.attacks.base.AttackRNG`), so a sample gets the same start in whichever batch,
        position or torchrun rank it lands: training on W ranks then equals training on one process with the
        whole batch. Off by default, which keeps the starts (and the weights) of the committed reference runs:
        one seed per batch, drawn from the trainer's per-epoch RNG, and the starts follow batch positions.
    """

    train_attack: str = "max-average"
    eps: float | None = None
    step_size: float | None = None
    steps: int = 7
    attack_mode: str = "eval"
    attack_amp: str | None = None
    attack_fold_bn: bool = True
    attack_cuda_graph: str = "auto"
    keyed_starts: bool = False


def _jsonable(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_jsonable(u) for u in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(u) for k, u in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class Defense:
    """Base class. Subclasses set ``name``, ``Config``, ``source``, ``assumptions`` and implement ``loss``."""

    name: ClassVar[str] = "defense"
    Config: ClassVar[type] = DefenseConfig
    source: ClassVar[str] = ""
    assumptions: ClassVar[tuple[str, ...]] = ()
    # Tags, built as ``name.tag``: config overrides on top of the defaults (which are the paper's).
    presets: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}}
    # Set on a defense built as a named preset of this class (``nkd`` is ``neokd`` with beta=0;
    # :mod:`neokd_bench.defenses.variants`); it goes into :meth:`describe`.
    variant: Any = None

    def __init__(self, **config_kwargs: Any) -> None:
        owner = f"defense {self.name!r}"
        amp = config_kwargs.get("attack_amp")
        if isinstance(amp, str) and amp.strip().lower() in AMP_ALIASES:
            config_kwargs = {**config_kwargs, "attack_amp": AMP_ALIASES[amp.strip().lower()]}
        kw = coerce_config(self.Config, owner, config_kwargs)
        if "train_attack" in kw:  # one parser for objectives, the attacks' (canonical spelling kept)
            try:
                kw["train_attack"] = str(Objective.parse(kw["train_attack"]))
            except UsageError:
                raise UsageError(f"train_attack {kw['train_attack']!r} is not an objective; use max-average, "
                                 "average or exit:K (0-based)") from None
        cfg = self.Config(**self.normalize_kwargs(kw))
        self._validate_common(cfg)
        self.validate(cfg)
        self.config = cfg
        self.dataset: str | None = None
        self.num_exits: int | None = None
        self.num_classes: int | None = None
        self.seed: int = 0
        self.epoch: int | None = None

    # -- configuration ---------------------------------------------------------------------------
    def _validate_common(self, cfg: DefenseConfig) -> None:
        if cfg.eps is not None and not cfg.eps >= 0:
            raise UsageError(f"eps must be >= 0 (got {cfg.eps}); e.g. eps=0.03137 for 8/255")
        if cfg.step_size is not None and not cfg.step_size > 0:
            raise UsageError(f"step_size must be > 0 (got {cfg.step_size}); e.g. step_size=0.00784 for 2/255")
        if cfg.steps < 1:
            raise UsageError(
                f"steps must be an integer >= 1 (got {cfg.steps!r}); the paper trains with steps=7"
            )
        if cfg.attack_mode not in ATTACK_MODES:
            raise UsageError(f"attack_mode {cfg.attack_mode!r} is not supported; use eval or train")
        if cfg.attack_cuda_graph not in ("auto", "on", "off"):
            raise UsageError(f"attack_cuda_graph {cfg.attack_cuda_graph!r} is not supported; use auto, on or off")
        if cfg.attack_amp is not None and cfg.attack_amp not in AMP_ALIASES.values():
            raise UsageError(f"attack_amp {cfg.attack_amp!r} is not supported; use bfloat16, float16 or "
                             "leave it unset")

    def normalize_kwargs(self, kw: dict[str, Any]) -> dict[str, Any]:
        """Subclass hook: turn user-facing spellings into canonical field values before validation."""
        return kw

    def validate(self, cfg: Any) -> None:
        """Subclass hook: raise :class:`UsageError` for an invalid value of a defense-specific field."""

    def resolve(self, cfg: Any) -> Any:
        """Subclass hook: fill dataset-dependent fields in ``setup`` (return a new frozen config)."""
        return cfg

    def setup(self, *, dataset: str, num_exits: int, num_classes: int, seed: int) -> None:
        """Resolve the fields left ``None`` for this dataset and model, and check lengths against ``num_exits``."""
        from .. import presets

        cfg = self.config
        if cfg.eps is None or cfg.step_size is None:
            t = presets.threat(dataset)
            cfg = dataclasses.replace(
                cfg,
                eps=t.eps if cfg.eps is None else cfg.eps,
                step_size=t.step_size if cfg.step_size is None else cfg.step_size,
            )
        objective = Objective.parse(cfg.train_attack)
        if objective.kind == "exit" and int(objective.exit) >= num_exits:  # type: ignore[arg-type]
            raise UsageError(
                f"train_attack {cfg.train_attack!r} is out of range for a {num_exits}-exit model; "
                f"use exit:0..exit:{num_exits - 1}"
            )
        self.dataset, self.num_exits, self.num_classes, self.seed = (
            dataset,
            int(num_exits),
            int(num_classes),
            int(seed),
        )
        self.config = self.resolve(cfg)

    def start_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch (0-based); per-epoch state must depend only on (seed, epoch)."""
        self.epoch = int(epoch)

    def graph_key(self) -> Any:
        """What a CUDA graph of this defense's loss step bakes in besides the model, the optimizer and the batch
        (``neokd_bench.step_graph``, for defenses that declare ``graph_safe``): the trainer records the step
        again when it changes. Default: the epoch (per-epoch state that the loss reads as it was when recorded).
        A defense whose per-epoch state lives in device buffers updated in place returns None."""
        return self.epoch

    # -- per-run state (checkpointed by the trainer) ----------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Per-run state that must survive a resume (tensors and plain values); empty for most defenses."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise UsageError(f"defense {self.name!r} keeps no state, but the checkpoint has {sorted(state)}")

    # -- training ---------------------------------------------------------------------------------
    def attack_options(self, seed: int | None = None) -> dict[str, Any]:
        """The training attack's PGD options from the resolved config (what :meth:`attack` builds from, and
        what a defense with its own PGD subclass, such as TEAT, passes on)."""
        cfg = self.config
        if cfg.eps is None or cfg.step_size is None:
            raise UsageError(
                f"defense {self.name!r}: eps and step_size are unresolved; call setup(dataset=...) first "
                "or pass eps= and step_size="
            )
        return {"eps": cfg.eps, "step_size": cfg.step_size, "steps": cfg.steps, "objective": cfg.train_attack,
                "mode": cfg.attack_mode, "amp_dtype": cfg.attack_amp,
                "fold_bn": "cpu" if cfg.attack_fold_bn and cfg.attack_mode == "eval" else False,
                "cuda_graph": cfg.attack_cuda_graph, "seed": seed}

    def attack(self, seed: int | None = None) -> Any:
        """The training attack: ``neokd_bench.create_attack("pgd", ...)`` built from the resolved config."""
        from .. import create_attack

        return create_attack("pgd", **self.attack_options(seed))

    @staticmethod
    def draw_seed() -> int:
        """A seed for the attack's random start, drawn from torch's global RNG (which the trainer seeds per
        epoch), so training attacks are reproducible and a resumed run makes the same examples."""
        return int(torch.randint(0, 2**62, (1,)).item())

    def adversarial(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor | None = None) -> Tensor:
        """Training adversarial examples (in the eps-ball and [0,1]); the attack restores the model's mode.
        The random start is seeded from torch's global RNG (:meth:`draw_seed`), and keyed by ``index`` with
        ``keyed_starts``."""
        return self.attack(seed=self.draw_seed())(model, x, y, index=self.start_keys(index)).detach()

    def start_keys(self, index: Tensor | None) -> Tensor | None:
        """What keys the training attack's random starts: ``index`` with ``keyed_starts``, else None."""
        if not self.config.keyed_starts:
            return None
        if index is None:
            raise UsageError(f"defense {self.name!r} has keyed_starts=true and needs the samples' indices; call "
                             "training_step(model, x, y, index=indices)")
        return index

    def loss(
        self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar training loss (batch mean, summed over exits) and named detached components. The trainer
        logs the loss as ``loss`` and each component under its name; a component may not be named ``loss``
        (nor another name in :data:`RESERVED_PARTS`)."""
        raise NotImplementedError

    def training_step(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor | None = None,
        loss_model: nn.Module | None = None,
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """``adversarial()`` on ``model``, then ``loss()`` on ``loss_model`` (default ``model``); returns
        ``(loss, parts, x_adv)``. Under torchrun the trainer passes the plain module as ``model`` and its
        ``DistributedDataParallel`` wrapper as ``loss_model``: the attack's passes need no gradient sync, the
        loss's passes do (:mod:`neokd_bench.trainer`, "Data parallel")."""
        if self.epoch is None:
            self.start_epoch(0)
        x_adv = self.adversarial(model, x, y, index=index)
        loss, parts = self.loss(model if loss_model is None else loss_model, x, x_adv, y, index=index)
        return loss, parts, x_adv

    # -- provenance -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """JSON-ready: name, the (resolved) config, the assumptions and the source."""
        out = {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "config": _jsonable(dataclasses.asdict(self.config)),
            "assumptions": list(self.all_assumptions()),
            "source": self.source,
        }
        if self.variant is not None:
            out["source"] = f"{self.source}; {self.variant.source}"
            out["variant"] = _jsonable(self.variant.describe())
        return out

    common_assumptions: ClassVar[tuple[str, ...]] = (
        (
            "Training adversarial examples: neokd_bench PGD with a uniform random start in the eps-ball, "
            "sign-gradient steps, projection and [0,1] clamping; made in the mode given by attack_mode "
            "(docs/design.md: eval) and the model's mode is restored afterwards. The random start is seeded from "
            "torch's global RNG, which the trainer seeds per epoch (reproducible, exact on resume); with "
            "keyed_starts it is also keyed by the sample's index in the training set."
        ),
        "Losses are averaged over the batch and summed over exits (paper Eq. 4/7).",
        (
            "Clean and adversarial outputs for the loss come from two separate forward passes in train mode "
            "(no clean+adversarial concatenation, so BatchNorm statistics are per pass)."
        ),
    )

    def all_assumptions(self) -> tuple[str, ...]:
        """The shared assumptions (a subclass may replace them) followed by the defense's own."""
        extra = self.variant.assumptions if self.variant is not None else ()
        return tuple(self.common_assumptions) + tuple(self.assumptions) + tuple(extra)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


# Names the trainer writes into each epoch's log beside the loss parts: a part may not take one of them
# (a part named "loss" would be added to the trainer's own "loss" entry, doubling the logged loss).
RESERVED_PARTS = frozenset({"loss", "epoch", "lr", "imgs_per_s", "wall_s"})


def check_parts(defense: Any, parts: dict[str, Any]) -> None:
    """One-line :class:`UsageError` when a loss part takes a name the trainer reserves."""
    clash = sorted(RESERVED_PARTS.intersection(parts))
    if clash:
        name = getattr(defense, "name", type(defense).__name__)
        raise UsageError(f"defense {name!r} returns a loss part named {clash[0]!r}, which the trainer reserves for "
                         f"its own log ({', '.join(sorted(RESERVED_PARTS))}); rename it, e.g. 'ce_adv'")


# -- loss helpers shared by the defenses ------------------------------------------------------------
def forward_both(model: nn.Module, x: Tensor, x_adv: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Clean and adversarial logits of every exit, two forward passes in the model's current mode."""
    clean = list(model(x))
    adv = list(model(x_adv))
    return clean, adv


def ce_sum(logits: list[Tensor], y: Tensor) -> Tensor:
    """Sum over exits of the batch-mean cross-entropy (paper Eq. 4)."""
    return torch.stack([nn.functional.cross_entropy(z.float(), y) for z in logits]).sum()


def resolve_teacher(teacher: Any, num_exits: int) -> int | str:
    """``"last"`` -> L-1; ``"ensemble"`` stays; an int must be a valid 0-based exit."""
    if teacher == "last":
        return num_exits - 1
    if teacher == "ensemble":
        return "ensemble"
    if isinstance(teacher, int) and 0 <= teacher < num_exits:
        return teacher
    raise UsageError(
        f"teacher {teacher!r} is out of range for a {num_exits}-exit model; use last, ensemble or 0..{num_exits - 1}"
    )


def coerce_teacher(teacher: Any) -> int | str:
    """Accept ``"last"``, ``"ensemble"``, an int, or an int written as a string (0-based exit)."""
    if isinstance(teacher, bool):
        raise UsageError(f"teacher {teacher!r} is not valid; use last, ensemble or a 0-based exit index")
    if isinstance(teacher, int):
        if teacher < 0:
            raise UsageError(f"teacher {teacher} must be >= 0 (0-based exit index), last or ensemble")
        return teacher
    if isinstance(teacher, str):
        t = teacher.strip().lower()
        if t in ("last", "ensemble"):
            return t
        t = t.removeprefix("exit:")
        if t.isdigit():
            return int(t)
    raise UsageError(
        f"teacher {teacher!r} is not valid; use last, ensemble or a 0-based exit index such as 0"
    )


class TeacherKDDefense(Defense):
    """Shared config handling of the teacher-distillation baselines (SKD, ARD): a ``teacher`` field
    (``last``, ``ensemble`` or a 0-based exit), a positive ``temperature`` and a non-negative ``weight``.
    Subclasses set ``paper_temperature`` and ``paper_weight`` (quoted in error messages)."""

    paper_temperature: ClassVar[float] = 1.0
    paper_weight: ClassVar[float] = 1.0

    def normalize_kwargs(self, kw: dict[str, Any]) -> dict[str, Any]:
        if "teacher" in kw:
            kw["teacher"] = coerce_teacher(kw["teacher"])
        return kw

    def validate(self, cfg: Any) -> None:
        label = self.name.split("-")[0].upper()
        if not cfg.temperature > 0:
            raise UsageError(f"temperature must be > 0 (got {cfg.temperature}); {label} uses "
                             f"temperature={self.paper_temperature:g}")
        if not cfg.weight >= 0:
            raise UsageError(f"weight must be >= 0 (got {cfg.weight}); {label} uses weight={self.paper_weight:g}")
        coerce_teacher(cfg.teacher)

    def resolve(self, cfg: Any) -> Any:
        assert self.num_exits is not None
        resolve_teacher(cfg.teacher, self.num_exits)
        return cfg
