"""The defense contract shared by every registered defense (DESIGN.md, "Contracts").

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
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import UsageError

ATTACK_MODES = ("eval", "train")
AMP_ALIASES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}
_EXIT_OBJECTIVE = re.compile(r"^exit:(\d+)$")


@dataclass(frozen=True)
class DefenseConfig:
    """Fields every defense shares: how its training adversarial examples are made.

    train_attack: PGD objective over exits, ``max-average`` (paper Eq. 2, the paper's training attack),
        ``average`` (Eq. 3, Appendix C) or ``exit:K`` (0-based single exit, Eq. 1).
    eps, step_size: L-inf radius and PGD step; ``None`` resolves per dataset in ``setup``.
    steps: PGD steps (PGD-7 for training, paper Sec. 4.1).
    attack_mode: model mode while the attack runs (DESIGN.md: eval); the attack restores the mode.
    attack_amp: autocast dtype for the attack's forward passes (``None``, ``bfloat16``, ``float16``).
    attack_fold_bn: when the attack runs in eval mode, run it on a copy of the model with BatchNorm folded
        into the preceding convolutions (``fold_bn`` of :mod:`neokd_bench.attacks.base`): the same function
        up to float rounding, and a faster attack on BatchNorm networks (MSDNet on CPU: PGD-7 max-average about
        1.5x instead of 1.25x the naive reference, ``benchmarks/bench_attacks.py``). On by default for
        training attacks (this project's choice; evaluation attacks do not fold unless asked); ignored with
        ``attack_mode="train"``, where BatchNorm uses batch statistics.
    """

    train_attack: str = "max-average"
    eps: float | None = None
    step_size: float | None = None
    steps: int = 7
    attack_mode: str = "eval"
    attack_amp: str | None = None
    attack_fold_bn: bool = True


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

    def __init__(self, **config_kwargs: Any) -> None:
        fields = {f.name: f for f in dataclasses.fields(self.Config)}
        unknown = sorted(set(config_kwargs) - set(fields))
        if unknown:
            raise UsageError(
                f"defense {self.name!r} has no option {unknown[0]!r}; its options are: {', '.join(fields)}"
            )
        kw = {k: self._coerce(k, v, fields[k]) for k, v in config_kwargs.items()}
        kw = self.normalize_kwargs(kw)
        try:
            cfg = self.Config(**kw)
        except TypeError as exc:  # pragma: no cover - dataclass signature mismatch
            raise UsageError(f"defense {self.name!r}: {exc}") from exc
        self._validate_common(cfg)
        self.validate(cfg)
        self.config = cfg
        self.dataset: str | None = None
        self.num_exits: int | None = None
        self.num_classes: int | None = None
        self.seed: int = 0
        self.epoch: int | None = None

    # -- configuration ---------------------------------------------------------------------------
    @staticmethod
    def _coerce(name: str, value: Any, f: dataclasses.Field) -> Any:
        """Accept what a CLI or JSON file gives: lists for tuples, ints for floats, aliases for AMP."""
        if value is None:
            return None
        if isinstance(value, list):
            value = tuple(value)
        if name == "attack_amp" and isinstance(value, str):
            if value.lower() in ("none", ""):
                return None
            if value.lower() not in AMP_ALIASES:
                raise UsageError(
                    f"attack_amp {value!r} is not supported; use bfloat16, float16 or leave it unset"
                )
            return AMP_ALIASES[value.lower()]
        ftype = str(f.type)
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and ftype.startswith("float"):
            return float(value)
        if isinstance(value, str) and ftype.startswith("float"):
            try:
                return float(value)
            except ValueError:
                raise UsageError(f"option {name}={value!r} must be a number") from None
        if isinstance(value, str) and ftype.startswith("int"):
            try:
                return int(value)
            except ValueError:
                raise UsageError(f"option {name}={value!r} must be an integer") from None
        return value

    def _validate_common(self, cfg: DefenseConfig) -> None:
        ta = cfg.train_attack
        if ta not in ("max-average", "average") and not _EXIT_OBJECTIVE.match(str(ta)):
            raise UsageError(
                f"train_attack {ta!r} is not an objective; use max-average, average or exit:K (0-based)"
            )
        if cfg.eps is not None and not cfg.eps >= 0:
            raise UsageError(f"eps must be >= 0 (got {cfg.eps}); e.g. eps=0.03137 for 8/255")
        if cfg.step_size is not None and not cfg.step_size > 0:
            raise UsageError(f"step_size must be > 0 (got {cfg.step_size}); e.g. step_size=0.00784 for 2/255")
        if not isinstance(cfg.steps, int) or cfg.steps < 1:
            raise UsageError(
                f"steps must be an integer >= 1 (got {cfg.steps!r}); the paper trains with steps=7"
            )
        if cfg.attack_mode not in ATTACK_MODES:
            raise UsageError(f"attack_mode {cfg.attack_mode!r} is not supported; use eval or train")
        if cfg.attack_amp is not None and cfg.attack_amp not in AMP_ALIASES.values():
            raise UsageError(f"attack_amp {cfg.attack_amp!r} is not supported; use bfloat16 or float16")
        if cfg.attack_fold_bn not in (True, False):
            raise UsageError(f"attack_fold_bn {cfg.attack_fold_bn!r} is not a boolean; use true or false")

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
        m = _EXIT_OBJECTIVE.match(cfg.train_attack)
        if m and int(m.group(1)) >= num_exits:
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
                "fold_bn": cfg.attack_fold_bn and cfg.attack_mode == "eval", "seed": seed}

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
        The random start is seeded from torch's global RNG (:meth:`draw_seed`)."""
        return self.attack(seed=self.draw_seed())(model, x, y).detach()

    def loss(
        self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar training loss (batch mean, summed over exits) and named detached components."""
        raise NotImplementedError

    def training_step(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """``adversarial()`` then ``loss()``; returns ``(loss, parts, x_adv)``."""
        if self.epoch is None:
            self.start_epoch(0)
        x_adv = self.adversarial(model, x, y, index=index)
        loss, parts = self.loss(model, x, x_adv, y, index=index)
        return loss, parts, x_adv

    # -- provenance -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """JSON-ready: name, the (resolved) config, the assumptions and the source."""
        return {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "config": _jsonable(dataclasses.asdict(self.config)),
            "assumptions": list(self.all_assumptions()),
            "source": self.source,
        }

    common_assumptions: ClassVar[tuple[str, ...]] = (
        (
            "Training adversarial examples: neokd_bench PGD with a uniform random start in the eps-ball, "
            "sign-gradient steps, projection and [0,1] clamping; made in the mode given by attack_mode "
            "(DESIGN.md: eval) and the model's mode is restored afterwards. The random start is seeded from "
            "torch's global RNG, which the trainer seeds per epoch (reproducible, exact on resume)."
        ),
        "Losses are averaged over the batch and summed over exits (paper Eq. 4/7).",
        (
            "Clean and adversarial outputs for the loss come from two separate forward passes in train mode "
            "(no clean+adversarial concatenation, so BatchNorm statistics are per pass)."
        ),
    )

    def all_assumptions(self) -> tuple[str, ...]:
        """The shared assumptions (a subclass may replace them) followed by the defense's own."""
        return tuple(self.common_assumptions) + tuple(self.assumptions)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


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


def teacher_variant(base: type, cls_name: str, reg_name: str, teacher: Any, label: str, module: str) -> type:
    """A registered Table A4 variant of ``base`` (SKD or ARD) whose config default is ``teacher``."""
    cfg = dataclasses.dataclass(frozen=True)(
        type(f"{cls_name}Config", (base.Config,),
             {"__annotations__": {"teacher": Any}, "teacher": teacher, "__module__": module})
    )
    return type(cls_name, (base,), {
        "name": reg_name,
        "Config": cfg,
        "source": base.source + f"; Table A4 row '{label}'",
        "__doc__": f"Table A4 '{label}': {base.name.upper()} with teacher={teacher!r} (0-based exit index or 'ensemble').",
        "__module__": module,
    })


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
