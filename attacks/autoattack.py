"""AutoAttack and its parts adapted to multi-exit networks (paper App. H.2, H.3, Table 8), built on pyautoattack.

Sources: Croce & Hein, ICML 2020 (APGD-CE, APGD-T, AutoAttack), Croce & Hein, ICML 2020 (FAB), Andriushchenko
et al., ECCV 2020 (Square); the code is the ``pyautoattack`` 0.2.0 package (fra31/auto-attack on PyPI).

Multi-exit adaptation (App. H.2): the loss each attack optimizes is **averaged over the exits** it attacks,
and a sample counts as adversarial only when **every** such exit is fooled. ``objective="average"`` (the
default) attacks all exits; ``exit:k`` attacks exit ``k`` alone (through ``model(x, upto=k)``);
``max-average`` runs one single-exit attack per exit and selects per sample by the mean cross-entropy over
exits (Eq. 2), as every attack in this package does.

How pyautoattack is reused (its classes are subclassed; no algorithm code is copied):

* ``attack_single_run`` (the algorithm of each attack) is pyautoattack's. Its ``perturb`` (the outer loop
  over restarts and target classes on the still-robust samples) is not used: :class:`_LibraryAttack` runs
  that loop itself, so that "robust" means "at least one attacked exit still classifies correctly", and a
  result is kept only if it fools every attacked exit and lies in the eps-ball. The samples that no attempt
  fools get the best iterate of the attempts (``not_fooled="best"``, the default: :class:`BestIterate`) or
  the clean ``x`` (``not_fooled="clean"``, App. H's rule);
* APGD-T and FAB-T target the ``n_target_classes`` most likely *wrong* classes of the mean logits over the
  attacked exits (:meth:`ExitSet.wrong_classes`). Upstream takes ranks 2.. of the sorted logits because it
  attacks only correctly classified points, whose rank 1 is ``y``; here a sample is attacked while any exit
  is right, so the top class of the mean logits may be wrong, and ranks 2.. would target ``y`` itself;
* APGD / APGD-T call ``self.model(x)`` and test success with ``argmax == y`` inline. The model they see
  returns *decision scores* (:func:`decision_scores`: mean logits whose entry ``y`` is lifted to the top
  when some exit is still correct, and dropped to the bottom otherwise), so the inline test is the
  all-exits test; the per-exit logits ride on that tensor (``.exit_logits``) to the loss, which averages
  the per-exit loss. pyautoattack picks its criterion from the string ``self.loss``; only the method-valued
  entries can be overridden, so the exit-averaged cross-entropy of APGD-CE is installed on the
  ``"ce-targeted"`` entry (method ``ce_loss_targeted``; despite the name it is the untargeted CE on
  the true label). APGD-T's targeted DLR loss is pyautoattack's own ``dlr_loss_targeted``, averaged over exits;
* FAB linearizes the **mean logits over exits** (so its gradient is the average gradient of all exits,
  App. H.2.2), and its success test (``_get_predicted_label``) is the all-exits test;
* Square's ``margin_and_loss`` returns the largest per-exit margin (<= 0 only when every exit is fooled) and
  the per-exit loss averaged over exits (App. H.2.3).

Settings (App. H.3): L-inf; 50 iterations; APGD-T and FAB consider all class pairs
(``n_target_classes = num_classes - 1`` when left ``None``); Square uses 5000 queries; one restart; other
settings as in AutoAttack's standard version (rho 0.75; FAB alpha_max 0.1, eta 1.05, beta 0.9; Square p_init
0.8, margin loss). H.3 uses eps 0.03; the default here is the paper's CIFAR eps 8/255 (0.0314), pass the
dataset's eps. Budgets are config fields (``steps``, ``n_queries``, ``n_target_classes``), so tests cut them.

pyautoattack seeds the *global* torch RNG; every attack here runs inside ``torch.random.fork_rng`` so the
caller's RNG state is untouched, and parameters are frozen (``requires_grad=False``) during the run because
FAB calls ``.backward()``, which would otherwise write parameter ``.grad``.

:class:`StandardAutoAttack` is the unchanged standard AutoAttack of pyautoattack against one exit, through
:class:`~neokd_bench.models.base.ExitForward`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pyautoattack import AutoAttack
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from pyautoattack.fab_pt import FABAttack_PT
from pyautoattack.square import SquareAttack
from torch import nn

from ..errors import UsageError
from ..models.base import ExitForward
from .base import (
    Attack,
    AttackConfig,
    AttackRNG,
    Objective,
    _fail,
    any_correct,
    attacked_outputs,
    check_non_negative,
    check_positive_int,
    per_exit_losses,
    project,
)

# pyautoattack's warnings (e.g. "there are N points with zero gradient! ... See flags_doc.md") go to this logger.
# A library does not print on its own: the logger gets a NullHandler, so they reach a user only through logging
# they configure. The fraction of zero gradients per exit is measured and recorded by the masking check
# (evaluation.masking, "nonzero_gradients").
LOG = logging.getLogger("auto-attack")
LOG.addHandler(logging.NullHandler())


# ------------------------------------------------------------------------------------------------
# The exits an objective attacks
# ------------------------------------------------------------------------------------------------
class ExitSet:
    """The exits one objective attacks: exit ``k`` alone (computed alone,
    :func:`~neokd_bench.attacks.base.exit_logits`) or all exits."""

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        if objective.kind == "max-average":
            raise ValueError("ExitSet takes a single-exit or average objective")
        self.model = model
        self.objective = objective
        self.num_classes = int(model.num_classes)

    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        return attacked_outputs(self.model, x, self.objective)

    def mean_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([o.float() for o in self.outputs(x)]).mean(0)

    @torch.no_grad()
    def robust(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[N]`` bool: at least one attacked exit predicts ``y``."""
        return any_correct(self.outputs(x), y)


    @torch.no_grad()
    def score(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[N]``: the cross-entropy averaged over the attacked exits (Eq. 2's selection measure), which
        ranks the iterates kept for samples not fooled at every exit."""
        return per_exit_losses(self.outputs(x), y).mean(0)

    @torch.no_grad()
    def wrong_classes(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[N, C - 1]``: the classes other than ``y``, most likely first by the mean logits over the
        attacked exits. The targets of APGD-T and FAB-T: rank ``r`` (1-based) is column ``r - 1``; the
        true class is never a target, also where the mean logits' top class is already wrong."""
        z = self.mean_logits(x).scatter(1, y[:, None], float("-inf"))
        return z.argsort(dim=1, descending=True, stable=True)[:, :-1]


class BestIterate:
    """For the samples not (yet) fooled at every attacked exit: the candidate with the largest
    :meth:`ExitSet.score` offered so far (the ``not_fooled="best"`` rule)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x.clone()
        self.score = torch.full((len(x),), float("-inf"), device=x.device)

    def offer(self, exits: ExitSet, idx: torch.Tensor, cand: torch.Tensor, y: torch.Tensor) -> None:
        if idx.numel() == 0:
            return
        score = exits.score(cand, y)
        better = score > self.score[idx]
        self.x[idx[better]] = cand[better]
        self.score[idx[better]] = score[better]

    def fill(self, x_adv: torch.Tensor, robust: torch.Tensor) -> None:
        """Write the kept iterate into ``x_adv`` where ``robust`` still holds."""
        take = robust & (self.score > float("-inf"))
        x_adv[take] = self.x[take]


def decision_scores(outputs: Sequence[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """``[N, C]`` detached scores with ``argmax == y`` exactly when some exit predicts ``y``.

    The mean of the exits' logits, with entry ``y`` set above the maximum when some exit is correct and
    below the minimum when every exit is fooled. The other entries keep the order of the mean logits.
    """
    z = torch.stack([o.detach().float() for o in outputs]).mean(0)
    u = torch.arange(len(y), device=z.device)
    ok = any_correct(outputs, y)
    z[u, y] = torch.where(ok, z.amax(1) + 1.0, z.amin(1) - 1.0)
    return z


def multi_exit_label(outputs: Sequence[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """``y`` where some exit is correct, otherwise the first exit's (wrong) prediction."""
    return torch.where(any_correct(outputs, y), y, outputs[0].detach().argmax(1))


# ------------------------------------------------------------------------------------------------
# pyautoattack subclasses: loss averaged over exits, success only when all exits are fooled
# ------------------------------------------------------------------------------------------------
class _LabelledRun:
    """Mixin: remembers the labels of the batch ``attack_single_run`` works on (the outer loop only passes
    still-robust samples, so every model call inside the run is on that batch)."""

    exits: ExitSet
    _labels: torch.Tensor | None = None

    @contextlib.contextmanager
    def labelled(self, y: torch.Tensor) -> Iterator[None]:
        self._labels = y
        try:
            yield
        finally:
            self._labels = None

    def _labels_for(self, x: torch.Tensor) -> torch.Tensor:
        y = self._labels
        if y is None or len(y) != len(x):
            raise RuntimeError("multi-exit pyautoattack engine called outside its labelled run")
        return y

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        outs = self.exits.outputs(x)
        z = decision_scores(outs, self._labels_for(x))
        z.exit_logits = outs  # type: ignore[attr-defined]
        return z


class MultiExitAPGDCE(_LabelledRun, APGDAttack):
    """pyautoattack's APGD with the cross-entropy averaged over exits (App. H.2.1)."""

    def __init__(self, exits: ExitSet, **kw: Any) -> None:
        self.exits = exits
        super().__init__(self._scores, loss="ce", **kw)
        self.loss = "ce-targeted"  # criterion slot that calls a method; see ce_loss_targeted

    def ce_loss_targeted(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Untargeted: the per-sample CE on the true label, averaged over the attacked exits.
        return torch.stack([F.cross_entropy(o.float(), y, reduction="none")
                            for o in logits.exit_logits]).mean(0)  # type: ignore[attr-defined]


class MultiExitAPGDDLR(_LabelledRun, APGDAttack):
    """pyautoattack's APGD with its untargeted DLR loss averaged over exits (the APGD-DLR of AutoAttack's first
    version, Croce & Hein 2020, Sec. 4)."""

    def __init__(self, exits: ExitSet, **kw: Any) -> None:
        self.exits = exits
        super().__init__(self._scores, loss="dlr", **kw)

    def dlr_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([super(MultiExitAPGDDLR, self).dlr_loss(o.float(), y)
                            for o in logits.exit_logits]).mean(0)  # type: ignore[attr-defined]


class MultiExitAPGDT(_LabelledRun, APGDAttack_targeted):
    """pyautoattack's APGD-T with its targeted DLR loss averaged over exits (App. H.2.1)."""

    def __init__(self, exits: ExitSet, **kw: Any) -> None:
        self.exits = exits
        super().__init__(self._scores, **kw)

    def dlr_loss_targeted(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([super(MultiExitAPGDT, self).dlr_loss_targeted(o.float(), y)
                            for o in logits.exit_logits]).mean(0)  # type: ignore[attr-defined]


class MultiExitFAB(_LabelledRun, FABAttack_PT):
    """pyautoattack's FAB on the mean logits over exits (average gradient, App. H.2.2) with the all-exits
    success test. FAB-T's target of rank ``r`` is the r-th most likely wrong class of the mean logits
    (:meth:`ExitSet.wrong_classes`), never ``y``. Inside :meth:`tracking`, every iterate, projected onto the
    eps-ball, is offered to a :class:`BestIterate` (FAB has no loss of its own to rank them)."""

    def __init__(self, exits: ExitSet, **kw: Any) -> None:
        self.exits = exits
        self._track: tuple[BestIterate, torch.Tensor, float] | None = None
        self._calls = 0
        super().__init__(exits.mean_logits, **kw)

    @contextlib.contextmanager
    def tracking(self, x: torch.Tensor, eps: float) -> Iterator[BestIterate]:
        best = BestIterate(x)
        self._track, self._calls = (best, x.clone(), eps), 0
        try:
            yield best
        finally:
            self._track = None

    def _predict_fn(self, x: torch.Tensor) -> torch.Tensor:
        # pyautoattack calls this only to rank FAB-T's targets (`sort()[1][:, -target_class]`): the true class
        # is put last, so rank r is the r-th most likely wrong class.
        with torch.no_grad():
            return self.exits.mean_logits(x).scatter(1, self._labels_for(x)[:, None], float("-inf"))

    def _get_predicted_label(self, x: torch.Tensor) -> torch.Tensor:
        y = self._labels_for(x)
        with torch.no_grad():
            if self._track is not None and self._calls > 0:  # the first call is on the clean batch
                best, x0, eps = self._track
                best.offer(self.exits, torch.arange(len(x), device=x.device), project(x, x0, eps), y)
            self._calls += 1
            return multi_exit_label(self.exits.outputs(x), y)


class MultiExitSquare(SquareAttack):
    """pyautoattack's Square with the loss averaged over exits and the all-exits margin (App. H.2.3)."""

    def __init__(self, exits: ExitSet, **kw: Any) -> None:
        self.exits = exits
        super().__init__(exits.mean_logits, **kw)

    def margin_and_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [o.float() for o in self.exits.outputs(x)]
        onehot = F.one_hot(y, outs[0].shape[1]).bool()
        margins = torch.stack([o.gather(1, y[:, None]).squeeze(1) - o.masked_fill(onehot, float("-inf")).amax(1)
                               for o in outs])  # [E, N]
        if self.loss == "ce":
            loss = -torch.stack([F.cross_entropy(o, y, reduction="none") for o in outs]).mean(0)
        else:
            loss = margins.mean(0)
        return margins.amax(0), loss


# ------------------------------------------------------------------------------------------------
# Shared run machinery
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def isolated_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed the global RNG for a library that uses it, and restore the caller's state afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        yield


@contextlib.contextmanager
def frozen_params(model: nn.Module) -> Iterator[None]:
    """``requires_grad=False`` on all parameters for the duration (no ``.grad`` is written)."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def linf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).abs().amax(1)


@dataclass(frozen=True, kw_only=True)
class _LibraryConfig(AttackConfig):
    eps: float = 8 / 255
    objective: str = "average"  # App. H: the loss is averaged over all exits

    def _check_targets(self) -> None:
        n = getattr(self, "n_target_classes", None)
        if n is not None:
            check_positive_int("n_target_classes", n, 1, "n_target_classes=9, or None for all class pairs")


class _LibraryAttack(Attack):
    """Outer loop shared by the pyautoattack-based attacks: attempts (restarts, target classes) on the samples
    still robust, keeping a result only when it fools every attacked exit within the eps-ball. With
    ``not_fooled="best"`` each attempt's best iterate is offered to a :class:`BestIterate` for the samples it
    does not fool, and the winner is returned for the samples no attempt fools."""

    Config: ClassVar[type[_LibraryConfig]] = _LibraryConfig

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Objective,
            rng: AttackRNG) -> torch.Tensor:
        exits = ExitSet(model, objective)
        seed = rng.integer_seed(self.config.seed)
        x_adv = x.clone()
        keep = BestIterate(x) if self.config.not_fooled == "best" else None
        with frozen_params(model), isolated_rng(x.device, seed):
            robust = exits.robust(x, y)
            self.attack_robust(exits, x, y, robust, x_adv, seed, keep)
            if keep is not None:
                keep.fill(x_adv, robust)
        return project(x_adv, x, self.config.eps)

    def attack_robust(self, exits: ExitSet, x: torch.Tensor, y: torch.Tensor, robust: torch.Tensor,
                      x_adv: torch.Tensor, seed: int, keep: BestIterate | None = None) -> None:
        """Attack the samples where ``robust`` holds; write successes into ``x_adv`` and clear ``robust``;
        offer the best iterate of each attempt on the others to ``keep``."""
        torch.default_generator.manual_seed(seed)  # as pyautoattack's perturb: reseed at the attack's start
        if x.device.type == "cuda":
            torch.cuda.manual_seed(seed)
        engine = self.engine(exits, seed)
        for attempt in self.attempts(exits):
            idx = robust.nonzero().flatten()
            if idx.numel() == 0:
                return
            cand, best = self.single_run(engine, exits, x[idx], y[idx], attempt)
            # 1e-6: the libraries project with x +- eps, which can exceed eps by float rounding
            ok = ~exits.robust(cand, y[idx]) & (linf(cand, x[idx]) <= self.config.eps + 1e-6)
            x_adv[idx[ok]] = cand[ok]
            robust[idx[ok]] = False
            if keep is not None:
                keep.offer(exits, idx[~ok], project(best[~ok], x[idx[~ok]], self.config.eps), y[idx[~ok]])

    # -- per attack ------------------------------------------------------------------------------
    def engine(self, exits: ExitSet, seed: int) -> Any:
        raise NotImplementedError

    def attempts(self, exits: ExitSet) -> list[Any]:
        return list(range(self.config.n_restarts))  # type: ignore[attr-defined]

    def single_run(self, engine: Any, exits: ExitSet, x: torch.Tensor, y: torch.Tensor, attempt: Any
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """One attempt on ``(x, y)``: ``(candidate, best)``, the candidate tested for success at every
        attacked exit, and the attempt's best iterate for the samples it does not fool."""
        raise NotImplementedError

    def n_targets(self, exits: ExitSet) -> int:
        n = self.config.n_target_classes  # type: ignore[attr-defined]
        c = exits.num_classes
        if n is None:
            return c - 1
        if n > c - 1:
            raise UsageError(f"n_target_classes={n} exceeds num_classes - 1 = {c - 1}; "
                             f"use n_target_classes={c - 1} or None (all class pairs)")
        return int(n)


# ------------------------------------------------------------------------------------------------
# APGD-CE
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class APGDCEConfig(_LibraryConfig):
    """Defaults: App. H.3 (50 iterations, CE loss) and AutoAttack standard (1 restart, rho 0.75)."""

    steps: int = 50
    n_restarts: int = 1
    rho: float = 0.75

    def validate(self) -> None:
        super().validate()
        check_positive_int("steps", self.steps, 1, "steps=50")
        check_positive_int("n_restarts", self.n_restarts, 1, "n_restarts=1")
        check_non_negative("rho", self.rho, "rho=0.75")


class APGDCE(_LibraryAttack):
    """APGD on the cross-entropy averaged over exits; adversarial only when every exit is fooled
    (Croce & Hein 2020; NEO-KD App. H.2.1). Built on pyautoattack's ``APGDAttack``."""

    name = "apgd-ce"
    presets = {"paper": {}, "tiny": {"steps": 3}}
    Config = APGDCEConfig
    config: APGDCEConfig

    def engine(self, exits: ExitSet, seed: int) -> MultiExitAPGDCE:
        return MultiExitAPGDCE(exits, n_iter=self.config.steps, norm="Linf", n_restarts=1, eps=self.config.eps,
                               seed=seed, rho=self.config.rho, verbose=False,
                               logger=LOG)

    def single_run(self, engine: Any, exits: ExitSet, x: torch.Tensor, y: torch.Tensor, attempt: Any
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        engine.init_hyperparam(x)
        with engine.labelled(y):
            x_best, _, _, x_best_adv = engine.attack_single_run(x, y)
        return x_best_adv, x_best  # x_best: the iterate with the largest loss


# ------------------------------------------------------------------------------------------------
# APGD-DLR
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class APGDDLRConfig(APGDCEConfig):
    """Defaults: AutoAttack's APGD (100 iterations in its standard version; 50 here as App. H.3), 1 restart,
    rho 0.75."""


class APGDDLR(_LibraryAttack):
    """APGD on the untargeted DLR loss (difference of logits ratio, Croce & Hein 2020, Eq. 6) averaged over
    exits; adversarial only when every exit is fooled. Built on pyautoattack's ``APGDAttack(loss="dlr")``.
    Needs at least 3 classes (the DLR loss does). Its loss is invariant to the scale of the logits, so it
    does not lose its gradient where a cross-entropy saturates (a sign of gradient masking)."""

    name = "apgd-dlr"
    presets = {"paper": {}, "tiny": {"steps": 3}}
    Config = APGDDLRConfig
    config: APGDDLRConfig

    def engine(self, exits: ExitSet, seed: int) -> MultiExitAPGDDLR:
        if exits.num_classes < 3:
            raise UsageError(f"apgd-dlr needs >= 3 classes (DLR loss); the model has {exits.num_classes}; "
                             "use --attack apgd-ce")
        return MultiExitAPGDDLR(exits, n_iter=self.config.steps, norm="Linf", n_restarts=1, eps=self.config.eps,
                                seed=seed, rho=self.config.rho, verbose=False,
                                logger=LOG)

    single_run = APGDCE.single_run


# ------------------------------------------------------------------------------------------------
# APGD-T
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class APGDTConfig(APGDCEConfig):
    """Defaults: App. H.3 (50 iterations, all class pairs: ``n_target_classes=None`` = num_classes - 1)."""

    n_target_classes: int | None = None

    def validate(self) -> None:
        super().validate()
        self._check_targets()


class APGDT(_LibraryAttack):
    """APGD-T (targeted DLR) averaged over exits, for each of the ``n_target_classes`` most likely wrong
    classes of the mean logits; adversarial only when every exit is fooled (NEO-KD App. H.2.1). Built on
    pyautoattack's ``APGDAttack_targeted``. Needs at least 4 classes (the DLR-T loss does)."""

    name = "apgd-t"
    presets = {"paper": {}, "tiny": {"steps": 2, "n_target_classes": 2}}
    Config = APGDTConfig
    config: APGDTConfig

    def engine(self, exits: ExitSet, seed: int) -> MultiExitAPGDT:
        if exits.num_classes < 4:
            raise UsageError(f"apgd-t needs >= 4 classes (targeted DLR loss); the model has "
                             f"{exits.num_classes}; use --attack apgd-ce")
        return MultiExitAPGDT(exits, n_iter=self.config.steps, norm="Linf", n_restarts=1, eps=self.config.eps,
                              seed=seed, rho=self.config.rho, n_target_classes=self.n_targets(exits),
                              verbose=False, logger=LOG)

    def attempts(self, exits: ExitSet) -> list[Any]:
        # pyautoattack's order (targets outside, restarts inside), over the ranks 1 .. n of the wrong classes.
        return [(t, r) for t in range(1, self.n_targets(exits) + 1) for r in range(self.config.n_restarts)]

    def single_run(self, engine: Any, exits: ExitSet, x: torch.Tensor, y: torch.Tensor, attempt: Any
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        target_rank, _ = attempt
        engine.init_hyperparam(x)
        engine.y_target = exits.wrong_classes(x, y)[:, target_rank - 1]
        with engine.labelled(y):
            x_best, _, _, x_best_adv = engine.attack_single_run(x, y)
        return x_best_adv, x_best


# ------------------------------------------------------------------------------------------------
# FAB
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class FABConfig(_LibraryConfig):
    """Defaults: App. H.3 (50 iterations, all class pairs) and AutoAttack's FAB-T settings."""

    steps: int = 50
    n_restarts: int = 1
    targeted: bool = True
    n_target_classes: int | None = None
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9

    def validate(self) -> None:
        super().validate()
        check_positive_int("steps", self.steps, 1, "steps=50")
        check_positive_int("n_restarts", self.n_restarts, 1, "n_restarts=1")
        if not isinstance(self.targeted, bool):
            _fail("targeted", self.targeted, "use targeted=True (FAB-T, all class pairs) or targeted=False")
        self._check_targets()
        for f in ("alpha_max", "eta", "beta"):
            check_non_negative(f, getattr(self, f))


class FAB(_LibraryAttack):
    """FAB (targeted by default: FAB-T over all class pairs) on the mean logits over exits, adversarial only
    when every exit is fooled and the perturbation is within eps (Croce & Hein 2020; NEO-KD App. H.2.2).
    Built on pyautoattack's ``FABAttack_PT``."""

    name = "fab"
    presets = {"paper": {}, "tiny": {"steps": 2, "n_target_classes": 2}}
    Config = FABConfig
    config: FABConfig

    def engine(self, exits: ExitSet, seed: int) -> MultiExitFAB:
        c = self.config
        return MultiExitFAB(exits, norm="Linf", n_restarts=1, n_iter=c.steps, eps=c.eps, alpha_max=c.alpha_max,
                            eta=c.eta, beta=c.beta, verbose=False, seed=seed, targeted=c.targeted,
                            n_target_classes=self.n_targets(exits) if c.targeted else 0)

    def attempts(self, exits: ExitSet) -> list[Any]:
        if not self.config.targeted:
            return [(None, r) for r in range(self.config.n_restarts)]
        return [(t, r) for t in range(1, self.n_targets(exits) + 1) for r in range(self.config.n_restarts)]

    def single_run(self, engine: Any, exits: ExitSet, x: torch.Tensor, y: torch.Tensor, attempt: Any
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        target_rank, restart = attempt
        engine.target_class = target_rank  # rank among the wrong classes (MultiExitFAB._predict_fn)
        with engine.labelled(y), engine.tracking(x, self.config.eps) as best:
            adv = engine.attack_single_run(x, y, use_rand_start=restart > 0, is_targeted=target_rank is not None)
        return adv, torch.where((best.score > float("-inf")).view(-1, *[1] * (x.dim() - 1)), best.x, adv)


# ------------------------------------------------------------------------------------------------
# Square
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SquareConfig(_LibraryConfig):
    """Defaults: App. H.3 (5000 queries) and AutoAttack's Square settings (p_init 0.8, margin loss)."""

    n_queries: int = 5000
    n_restarts: int = 1
    p_init: float = 0.8
    loss: str = "margin"

    def validate(self) -> None:
        super().validate()
        check_positive_int("n_queries", self.n_queries, 1, "n_queries=5000")
        check_positive_int("n_restarts", self.n_restarts, 1, "n_restarts=1")
        check_non_negative("p_init", self.p_init, "p_init=0.8")
        if self.loss not in ("margin", "ce"):
            _fail("loss", self.loss, "use loss='margin' (default) or loss='ce'")


class Square(_LibraryAttack):
    """Square (score-based random search) on the loss averaged over exits; adversarial only when every exit
    is fooled (Andriushchenko et al. 2020; NEO-KD App. H.2.3). Built on pyautoattack's ``SquareAttack``."""

    name = "square"
    presets = {"paper": {}, "tiny": {"n_queries": 10}}
    Config = SquareConfig
    config: SquareConfig

    def engine(self, exits: ExitSet, seed: int) -> MultiExitSquare:
        c = self.config
        return MultiExitSquare(exits, norm="Linf", n_queries=c.n_queries, eps=c.eps, p_init=c.p_init,
                               n_restarts=1, seed=seed, verbose=False, loss=c.loss, resc_schedule=False)

    def single_run(self, engine: Any, exits: ExitSet, x: torch.Tensor, y: torch.Tensor, attempt: Any
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        engine.init_hyperparam(x)
        x_best = engine.attack_single_run(x, y)[1]  # the fooling point, else the best by Square's loss
        return x_best, x_best


# ------------------------------------------------------------------------------------------------
# AutoAttack
# ------------------------------------------------------------------------------------------------
PARTS = ("apgd-ce", "apgd-t", "fab", "square")


@dataclass(frozen=True, kw_only=True)
class MultiExitAutoAttackConfig(_LibraryConfig):
    """Defaults: App. H.2 / H.3 - APGD-CE, APGD-T, FAB, Square in sequence; 50 iterations; all class pairs;
    5000 queries; one restart each."""

    attacks: tuple[str, ...] = PARTS
    steps: int = 50
    n_queries: int = 5000
    n_target_classes: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.attacks, (list, str)):
            parts = self.attacks.split(",") if isinstance(self.attacks, str) else self.attacks
            object.__setattr__(self, "attacks", tuple(p.strip() for p in parts))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        bad = [a for a in self.attacks if a not in PARTS]
        if bad or not self.attacks:
            _fail("attacks", self.attacks, f"use a subset of {','.join(PARTS)}, e.g. attacks='apgd-ce,square'")
        check_positive_int("steps", self.steps, 1, "steps=50")
        check_positive_int("n_queries", self.n_queries, 1, "n_queries=5000")
        self._check_targets()


class MultiExitAutoAttack(_LibraryAttack):
    """AutoAttack adapted to multi-exit networks (NEO-KD App. H.2): APGD-CE, APGD-T, FAB(-T) and Square run in
    sequence, each on the samples that survived the previous ones; every part averages its loss over the
    exits and counts a sample as adversarial only when every exit is fooled."""

    name = "autoattack"
    presets = {"paper": {}, "tiny": {"steps": 2, "n_queries": 10, "n_target_classes": 2}}
    Config = MultiExitAutoAttackConfig
    config: MultiExitAutoAttackConfig

    def parts(self) -> list[_LibraryAttack]:
        c = self.config
        common = {"eps": c.eps, "objective": c.objective, "seed": c.seed, "mode": c.mode, "not_fooled": c.not_fooled}
        build = {
            "apgd-ce": lambda: APGDCE(steps=c.steps, **common),
            "apgd-t": lambda: APGDT(steps=c.steps, n_target_classes=c.n_target_classes, **common),
            "fab": lambda: FAB(steps=c.steps, n_target_classes=c.n_target_classes, **common),
            "square": lambda: Square(n_queries=c.n_queries, **common),
        }
        return [build[a]() for a in c.attacks]

    def attack_robust(self, exits: ExitSet, x: torch.Tensor, y: torch.Tensor, robust: torch.Tensor,
                      x_adv: torch.Tensor, seed: int, keep: BestIterate | None = None) -> None:
        for part in self.parts():
            if exits.num_classes < 4 and part.name == "apgd-t":
                continue  # DLR-T needs 4 classes; pyautoattack's standard run would fail here too
            part.attack_robust(exits, x, y, robust, x_adv, seed, keep)


# ------------------------------------------------------------------------------------------------
# Unchanged standard AutoAttack on one exit
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class StandardAutoAttackConfig(AttackConfig):
    """pyautoattack's own version (``standard``: APGD-CE, APGD-T, FAB-T, Square with 100 iterations, 9 target
    classes, 5000 queries). ``steps`` / ``n_queries`` cut the budgets when set (tests)."""

    eps: float = 8 / 255
    objective: str = "max-average"
    version: str = "standard"
    steps: int | None = None
    n_queries: int | None = None
    batch_size: int = 250
    not_fooled: str = "clean"  # pyautoattack's own rule: it returns the clean x for the samples it does not fool

    def validate(self) -> None:
        super().validate()
        if self.not_fooled != "clean":
            _fail("not_fooled", self.not_fooled, "autoattack-standard is pyautoattack unchanged, which returns the "
                  "clean x where it fails; use not_fooled='clean', or --attack autoattack for the best iterate")
        if Objective.parse(self.objective).kind == "average":
            _fail("objective", self.objective,
                  "autoattack-standard attacks one exit: use objective='exit:K' or 'max-average', "
                  "or --attack autoattack for the average over exits")
        if self.version not in ("standard", "plus", "rand"):
            _fail("version", self.version, "use version='standard' (default), 'plus' or 'rand'")
        if self.steps is not None:
            check_positive_int("steps", self.steps, 1, "steps=100")
        if self.n_queries is not None:
            check_positive_int("n_queries", self.n_queries, 1, "n_queries=5000")
        check_positive_int("batch_size", self.batch_size, 1, "batch_size=250")


def set_apgd_iterations(apgd: APGDAttack, n_iter: int) -> None:
    """Change an APGD's budget after construction, with the step-size checkpoints recomputed as its
    constructor does (0.22 / 0.06 / 0.03 of the iterations)."""
    apgd.n_iter = apgd.n_iter_orig = n_iter
    apgd.n_iter_2 = max(int(0.22 * n_iter), 1)
    apgd.n_iter_min = max(int(0.06 * n_iter), 1)
    apgd.size_decr = max(int(0.03 * n_iter), 1)


class StandardAutoAttack(Attack):
    """pyautoattack's standard AutoAttack, unchanged, against one exit (``objective="exit:k"``), through
    :class:`~neokd_bench.models.base.ExitForward`; ``max-average`` runs it once per exit and selects by
    Eq. 2. Source: Croce & Hein, ICML 2020."""

    name = "autoattack-standard"
    presets = {"paper": {}, "tiny": {"steps": 2, "n_queries": 10}}
    Config = StandardAutoAttackConfig
    config: StandardAutoAttackConfig

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Objective,
            rng: AttackRNG) -> torch.Tensor:
        c = self.config
        seed = rng.integer_seed(c.seed)
        forward = ExitForward(model, objective.exit)  # type: ignore[arg-type]
        with frozen_params(model), isolated_rng(x.device, seed):
            aa = AutoAttack(forward, device=x.device, eps=c.eps, norm="Linf", seed=seed, version=c.version)
            if c.steps is not None:
                set_apgd_iterations(aa.apgd, c.steps)
                set_apgd_iterations(aa.apgd_targeted, c.steps)
                aa.fab.n_iter = c.steps
            if c.n_queries is not None:
                aa.square.n_queries = c.n_queries
            x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=c.batch_size)
        return project(x_adv.to(x.device), x, c.eps)
