"""One base for every attack on a multi-exit network (docs/design.md, "Contracts" and "Attack settings").

An attack is built from the registry with its config (a frozen dataclass whose defaults are the paper's)
and called as ``attack(model, x, y) -> x_adv``. The base owns everything that is not the core loop:

* **the objective over exits**, the string config field ``objective``:

  - ``"exit:k"`` - single attack on exit ``k`` (0-based), paper Eq. 1. Only exit ``k``'s logits are
    computed (``model(x, upto=k, last_only=True)``, else ``model(x, upto=k)[k]``; :func:`exit_logits`): no
    block deeper than exit ``k`` runs, nor the heads of earlier exits;
  - ``"average"`` - the mean over exits of the *per-exit* loss (paper Eq. 3). It is not the loss of the
    averaged logits;
  - ``"max-average"`` - paper Eq. 2: one single attack per exit, then for each sample keep the candidate
    whose loss averaged over *all* exits is largest (Triple-Wins' ``pgd_max``; docs/design.md "Max-average
    attack"). Selection uses the cross-entropy of Eq. 2, in one no-grad forward pass over all candidates;
* the L-inf eps-ball projection and the [0, 1] clamp (:func:`project`);
* the model's train/eval mode (config field ``mode``, ``"eval"`` by default): it is set for the attack and
  every module's own ``training`` flag is restored afterwards, also when the attack raises;
* BatchNorm folding (config field ``fold_bn``, off by default): with ``mode="eval"`` the attack may run on
  a frozen copy of the model in which every ``Conv2d`` followed by an eval-mode ``BatchNorm2d`` inside an
  ``nn.Sequential`` is one convolution (:func:`fold_batchnorm`). The function attacked is the same; the
  float rounding is not, so an ``x_adv`` can differ from the unfolded attack's where a gradient
  component is near zero. It saves the BatchNorm passes (about 20% of a PGD step on the 7-exit MSDNet
  on CPU; ``benchmarks/bench_attacks.py``). Meant for training attacks. On a GPU it costs instead (the copy
  per call outweighs the saved passes: 0.83x on the 7-exit MSDNet on an NVIDIA H200), so ``fold_bn="cpu"``
  folds only inputs on a CPU, which is what training attacks use;
* seeding (config field ``seed``; :class:`AttackRNG`): the global RNG is never touched and the same seed
  gives the same ``x_adv``; ``seed=None`` draws a fresh seed. A caller that attacks a data set batch by
  batch passes the samples' indices, ``attack(model, x, y, index=idx)``: the random start of sample ``i`` then
  comes from a generator seeded with ``(seed, i, draw)``, the same in whichever batch, batch position,
  process or device the sample lands, and different for different samples (evaluation does this; the
  pyautoattack-based attacks, which draw from the global RNG, get a seed derived from the batch's indices,
  so their starts differ between batches but depend on the batch's composition). Without
  ``index`` the starts come from one :class:`torch.Generator` seeded with ``seed`` (the same numbers as
  torchattacks' PGD after ``torch.manual_seed(seed)``), so two batches of one size attacked with one seed
  get the same start noise;
* **samples not fooled at every exit** (config field ``not_fooled``). "Fooled" means every exit the
  objective attacks (exit ``k`` for ``exit:k``, all exits otherwise) predicts a wrong class. A sample that
  the attack fools is returned as the fooling iterate under both rules. For the others:

  - ``"best"`` (default): the attack's best iterate by its own objective, never the clean ``x`` (which
    would credit the exits the attack did fool). PGD: its last iterate (no line search, as in Madry et al.
    and torchattacks). CW: the iterate with the lowest mean margin. APGD-CE / APGD-T / Square: the best
    iterate of pyautoattack's run by its loss; FAB (which has no loss) its iterate, projected onto the
    eps-ball, with the largest mean cross-entropy over the attacked exits. Across restarts, target classes
    and the parts of AutoAttack the candidate with the largest mean cross-entropy over the attacked exits
    wins (the measure of the max-average selection, Eq. 2);
  - ``"clean"``: the paper's rule (App. H: a sample is adversarial only if it misleads all exits; used for
    its Table 8): the clean ``x``. The base applies it to whatever the attack returns.

  The field is part of the resolved config, so it is recorded in every result file;
* validation: a bad config value or an exit index out of range raises
  :class:`~neokd_bench.errors.UsageError` with a one-line message saying what to type instead.

A subclass sets ``name``, ``Config`` and ``presets`` (tags such as ``tiny``) and implements
:meth:`Attack.run` (one attack for one single-exit or ``average`` objective; it draws its random numbers from
the :class:`AttackRNG` it is given). It may override :meth:`Attack._candidates` to run the per-exit single
attacks of max-average together (PGD does). How an iterative attack's loop runs on a device (lock-step over
the per-exit attacks, the cascade, slices, CUDA-graph replay) is the base's executor,
:mod:`neokd_bench.attacks.executor`: the attack gives its ``step`` and gets ``Executor.of(attack)``.

Assumption (not in the paper): with ``mode="train"`` the attack's forward passes are ordinary
training-mode passes, so BatchNorm running statistics are updated by them, as in Triple-Wins' code.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import coerce_config
from ..errors import UsageError
from ..utils import derive_seed

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""Per-sample loss of one exit: ``(logits [N, C], y [N]) -> [N]``; larger is better for the attacker."""
ExitLossFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
"""Per-sample loss of exit ``k``: ``(logits [N, C], y [N], k) -> [N]``, for losses that differ per exit
(TEAT's attack loss reads a per-exit ensemble); given, it takes the place of a :data:`LossFn`."""

MODES = ("eval", "train")
NOT_FOOLED = ("best", "clean")
AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


# ------------------------------------------------------------------------------------------------
# Objective over exits
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Objective:
    """A parsed ``objective`` string: ``kind`` is ``"exit"``, ``"average"`` or ``"max-average"``."""

    kind: str
    exit: int | None = None

    @classmethod
    def parse(cls, text: str) -> Objective:
        hint = "use objective='max-average', 'average' or 'exit:K' with K a 0-based exit index"
        if not isinstance(text, str):
            raise UsageError(f"objective must be a string, got {text!r}; {hint}")
        s = text.strip().lower()
        if s in ("average", "max-average"):
            return cls(s)
        if s.startswith("exit:"):
            idx = s[5:]
            if idx.lstrip("-").isdigit():
                k = int(idx)
                if k < 0:
                    raise UsageError(f"objective {text!r} has a negative exit index; {hint}")
                return cls("exit", k)
        raise UsageError(f"unknown objective {text!r}; {hint}")

    def __str__(self) -> str:
        return f"exit:{self.exit}" if self.kind == "exit" else self.kind

    def check(self, model: nn.Module) -> None:
        n = num_exits(model)
        if self.kind == "exit" and not 0 <= int(self.exit) < n:  # type: ignore[arg-type]
            raise UsageError(
                f"objective 'exit:{self.exit}' is out of range for a {n}-exit model; "
                f"use exit:0 .. exit:{n - 1} (0-based)"
            )

    def upto(self, model: nn.Module) -> int:
        """Deepest exit this objective needs (the ``upto`` passed to the model)."""
        return int(self.exit) if self.kind == "exit" else num_exits(model) - 1  # type: ignore[arg-type]


def num_exits(model: nn.Module) -> int:
    n = getattr(model, "num_exits", None)
    if not isinstance(n, int) or n < 1:
        raise UsageError(
            f"{type(model).__name__} has no integer `num_exits`; attacks need a multi-exit model "
            "(see neokd_bench.models.base.MultiExitModel)"
        )
    return n


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy in float32 (logits may come from an autocast region)."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def per_exit_losses(outputs: Sequence[torch.Tensor], y: torch.Tensor, loss_fn: LossFn = cross_entropy,
                    exit_loss: ExitLossFn | None = None) -> torch.Tensor:
    """``[len(outputs), N]``: the per-sample loss of every exit (``exit_loss(o_k, y, k)`` when given)."""
    if exit_loss is None:
        return torch.stack([loss_fn(o, y) for o in outputs])
    return torch.stack([exit_loss(o, y, k) for k, o in enumerate(outputs)])


@functools.cache
def _takes_last_only(cls: type) -> bool:
    try:
        return "last_only" in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return False


def _defining_class(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in c.__dict__), None)


def cascade_is_safe(model: nn.Module) -> bool:
    """True when ``model.forward_cascade`` exists and is defined no higher in the class hierarchy than
    ``forward``: a subclass that overrides ``forward`` (input quantization, a wrapper) without its own
    cascade would otherwise be attacked through a function other than its ``forward``."""
    cls = type(model)
    fc, fw = _defining_class(cls, "forward_cascade"), _defining_class(cls, "forward")
    return fc is not None and fw is not None and issubclass(fc, fw)


def exit_logits(model: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    """Exit ``k``'s logits, computing only what they depend on: ``model(x, upto=k, last_only=True)[0]`` (no
    block deeper than exit ``k`` and no head of an earlier exit runs) when the model's ``forward`` takes
    ``last_only``, else ``model(x, upto=k)[k]``. Both go through ``model.__call__``, so hooks run."""
    if _takes_last_only(type(model)):
        return model(x, upto=k, last_only=True)[0]
    return model(x, upto=k)[k]


def objective_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Objective,
                   loss_fn: LossFn = cross_entropy, exit_loss: ExitLossFn | None = None) -> torch.Tensor:
    """Per-sample loss ``[N]`` of a single-exit or ``average`` objective (Eqs. 1 and 3).

    ``exit:k`` computes exit ``k`` alone (:func:`exit_logits`): no deeper block and no earlier head runs;
    ``average`` is the mean over
    exits of the per-exit loss (not the loss of averaged logits).
    """
    if objective.kind == "exit":
        k = int(objective.exit)  # type: ignore[arg-type]
        logits = exit_logits(model, x, k)
        return loss_fn(logits, y) if exit_loss is None else exit_loss(logits, y, k)
    if objective.kind == "average":
        return per_exit_losses(model(x), y, loss_fn, exit_loss).mean(0)
    raise ValueError("max-average is not a differentiable objective; run one attack per exit and select")


def attacked_outputs(model: nn.Module, x: torch.Tensor, objective: Objective) -> list[torch.Tensor]:
    """Logits of the exits an objective attacks: exit ``k`` alone (:func:`exit_logits`) or every exit."""
    if objective.kind == "exit":
        return [exit_logits(model, x, int(objective.exit))]  # type: ignore[arg-type]
    return list(model(x))


def any_correct(outputs: Sequence[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: some exit of ``outputs`` predicts (argmax) ``y``, i.e. the sample is not fooled at every exit."""
    return torch.stack([o.detach().argmax(1) == y for o in outputs]).any(0)


# Eval-mode attacks on a CPU run the batch in slices of this many samples: a slice's activations stay in the
# caches, which the memory-bound passes (a 1-channel convolution's output, ReLU and its backward) need. Measured
# on an AMD EPYC (AVX-512), 1 thread, SmallCNN, max-average PGD-7 of 128 samples: 0.56-0.59 s in slices of 64
# or 32 against 0.76-0.86 s in one pass (`benchmarks/bench_attacks.py`, column
# `train 1-pass`). Every sample's attack is
# its own (eval mode: no batch statistics; starts drawn for the whole batch first), so the result is the same
# up to float rounding: exactly the same when the slices divide the batch by a power of two.
MICRO_BATCH_CPU = 64


@torch.no_grad()
def select_max_average(model: nn.Module, candidates: torch.Tensor, y: torch.Tensor,
                       loss_fn: LossFn = cross_entropy, amp_dtype: str | None = None, select_batch: int = 0,
                       exit_loss: ExitLossFn | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 2 selection. ``candidates`` is ``[C, N, ...]`` (candidate ``k`` = single attack on exit ``k``).

    A no-grad forward pass over the ``C * N`` candidates; per sample the candidate with the largest loss
    averaged over all exits wins (first one on ties). ``select_batch`` caps the samples per forward pass:
    ``0`` (automatic) makes it one pass over all ``C * N`` on an accelerator and passes of at most
    ``MICRO_BATCH_CPU`` samples on a CPU, where a larger batch falls out of the caches (measured on the
    7-exit MSDNet at N = 128: one pass of 896 took 1.8x as long as seven passes of 128; on the 3-exit one,
    passes of 64 took 0.21 s against 0.26 s in passes of 128, on SmallCNN 0.055 against 0.089 s); if the one pass
    runs out of device memory it falls back to one group at a time, with a warning. Returns
    ``(x_adv [N, ...], index [N], mean_loss [C, N])``.
    """
    c, n = candidates.shape[:2]
    flat = candidates.flatten(0, 1)
    labels = y.repeat(c)
    cpu_chunk = max(min(n, MICRO_BATCH_CPU), 1)
    chunk = select_batch if select_batch > 0 else (len(flat) if flat.device.type != "cpu" else cpu_chunk)

    def mean_losses(chunk: int) -> torch.Tensor:
        losses = []
        with autocast(candidates.device, amp_dtype):
            for i in range(0, len(flat), chunk):
                losses.append(per_exit_losses(model(flat[i:i + chunk]), labels[i:i + chunk], loss_fn,
                                              exit_loss).mean(0))
        return torch.cat(losses).view(c, n)

    try:
        mean_loss = mean_losses(chunk)
    except torch.OutOfMemoryError:
        if chunk <= n or select_batch > 0:
            raise
        warnings.warn(f"max-average selection over {len(flat)} candidates ran out of device memory; "
                      f"selecting {n} at a time (set select_batch to skip the attempt)", stacklevel=2)
        mean_loss = mean_losses(max(n, 1))
    index = mean_loss.argmax(0)
    return candidates[index, torch.arange(n, device=candidates.device)], index, mean_loss


# ------------------------------------------------------------------------------------------------
# Small shared pieces
# ------------------------------------------------------------------------------------------------
def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the L-inf ball of radius ``eps`` around ``x``, then clamp to [0, 1]."""
    delta = torch.clamp(x_adv - x, min=-eps, max=eps)
    return torch.clamp(x + delta, min=0.0, max=1.0)


def random_start(x: torch.Tensor, eps: float, generator: torch.Generator | AttackRNG) -> torch.Tensor:
    """Uniform noise in the eps-ball, clamped to [0, 1] (same formula as torchattacks' PGD)."""
    if isinstance(generator, AttackRNG):
        noise = generator.uniform(x, eps)
    else:
        noise = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
    return torch.clamp(x + noise, min=0.0, max=1.0)


def autocast(device: torch.device, amp_dtype: str | None) -> contextlib.AbstractContextManager:
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp_dtype])


@contextlib.contextmanager
def model_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Put ``model`` in ``mode`` ("eval" or "train"); restore every module's own flag on exit."""
    saved = [(m, m.training) for m in model.modules()]
    try:
        model.train(mode == "train")
        yield model
    finally:
        for m, flag in saved:
            m.training = flag


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A frozen eval-mode copy of ``model`` in which each ``Conv2d`` directly followed by a ``BatchNorm2d``
    with running statistics, inside an ``nn.Sequential``, is replaced by one convolution with the
    BatchNorm folded in (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and the BatchNorm by ``Identity``.
    Equal to ``model`` in eval mode up to float rounding; parameters of the copy do not require grad."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    try:
        folded = copy.deepcopy(model)
    except Exception as exc:  # a model that cannot be copied cannot be folded
        raise UsageError(f"fold_bn=True needs a model that copy.deepcopy can copy ({exc}); use fold_bn=False") from exc
    folded.eval()
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        items = list(seq._modules.items())
        for (name_a, a), (name_b, b) in zip(items, items[1:]):
            if (type(a) is nn.Conv2d and type(b) is nn.BatchNorm2d and b.running_mean is not None
                    and b.running_var is not None):
                seq._modules[name_a] = fuse_conv_bn_eval(a, b)
                seq._modules[name_b] = nn.Identity()
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


def attack_batch(attack: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 index: torch.Tensor) -> torch.Tensor:
    """``attack(model, x, y, index=index)``; a plugin attack whose call takes no ``index`` gets
    ``attack(model, x, y)``. For callers that attack a data set in batches (``index``: the batch's indices)."""
    try:
        params = inspect.signature(attack).parameters.values()
    except (TypeError, ValueError):
        params = ()
    if any(p.name == "index" or p.kind is p.VAR_KEYWORD for p in params):
        return attack(model, x, y, index=index)
    return attack(model, x, y)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()  # fresh, non-deterministic; the global RNG is not touched
    else:
        g.manual_seed(int(seed))
    return g


class AttackRNG:
    """The random numbers of one attack call (see "seeding" in the module docstring).

    ``keys=None``: one :class:`torch.Generator` on ``device`` seeded with ``seed``. With ``keys`` (one integer
    per sample, e.g. its index in the data set), draw ``d`` of sample ``i`` comes from a CPU generator seeded
    with ``derive_seed(seed, keys[i], d)``, then moves to the device, so it is the same on every device;
    successive draws (the L starts of max-average, the restarts of CW) use ``d = 0, 1, ...``. One small
    generator per sample costs about 1 ms per draw for a batch of 128 (2-core AMD EPYC); the attack's
    forward passes dwarf it. ``seed=None`` draws a fresh seed.
    """

    def __init__(self, seed: int | None, device: torch.device, keys: torch.Tensor | None = None) -> None:
        self.generator = make_generator(seed, device)
        self.seed = int(seed) if seed is not None else int(self.generator.initial_seed())
        self.keys = None if keys is None else [int(k) for k in keys.tolist()]
        self.draws = 0

    def _keyed(self, x: torch.Tensor, fill: Callable[[torch.Tensor, torch.Generator], Any]) -> torch.Tensor:
        assert self.keys is not None and len(self.keys) == len(x)
        out = torch.empty(x.shape, dtype=x.dtype)
        g = torch.Generator()
        for row, key in zip(out, self.keys):
            fill(row, g.manual_seed(derive_seed(self.seed, key, self.draws)))
        self.draws += 1
        return out.to(x.device)

    def uniform(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """Noise like ``x``, uniform in [-eps, eps]."""
        if self.keys is None:
            return torch.empty_like(x).uniform_(-eps, eps, generator=self.generator)
        return self._keyed(x, lambda row, g: row.uniform_(-eps, eps, generator=g))

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise like ``x``."""
        if self.keys is None:
            return torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return self._keyed(x, lambda row, g: row.normal_(generator=g))

    def integer_seed(self, config_seed: int | None) -> int:
        """A seed for a library that draws from torch's global RNG (run inside an isolated RNG state). Keyed:
        derived from ``(seed, draw, every key of the batch)``, so it differs between batches; not keyed:
        ``config_seed``, else a draw from the generator."""
        if self.keys is None:
            if config_seed is not None:
                return int(config_seed)
            return int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator, device=self.generator.device))
        self.draws += 1
        return derive_seed(self.seed, self.draws - 1, *self.keys) & 0x7FFFFFFF


def sample_keys(index: Any, n: int, device: torch.device) -> torch.Tensor | None:
    """``index`` (one integer per sample, or None) as an int64 tensor on ``device``."""
    if index is None:
        return None
    try:
        keys = torch.as_tensor(index, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"index must hold one integer per sample (the samples' indices in the data set): "
                         f"{exc}") from exc
    if keys.dtype.is_floating_point or keys.dtype == torch.bool or keys.dtype.is_complex or keys.shape != (n,):
        raise UsageError(f"index must hold one integer per sample: got {keys.dtype} of shape {tuple(keys.shape)} "
                         f"for {n} samples; pass e.g. index=torch.arange(start, start + len(x))")
    return keys.long()


# ------------------------------------------------------------------------------------------------
# Config and base class
# ------------------------------------------------------------------------------------------------
def _fail(field: str, value: Any, what: str) -> None:
    raise UsageError(f"{field}={value!r} is invalid; {what}")


@dataclass(frozen=True, kw_only=True)
class AttackConfig:
    """Fields every attack has. Defaults: the CIFAR threat model of the paper (Sec. 4.1, App. A.2)."""

    eps: float = 8 / 255
    objective: str = "max-average"
    seed: int | None = None
    mode: str = "eval"
    fold_bn: bool | str = False  # eval mode only: attack a copy with Conv2d+BatchNorm2d folded (fold_batchnorm);
                                 # "cpu": fold when the input is on a CPU only
    select_batch: int = 0  # max-average selection: samples per forward pass; 0 = automatic (see
                           # select_max_average: all candidates at once on a GPU, one group at a time on CPU)
    not_fooled: str = "best"  # samples not fooled at every attacked exit: "best" iterate or "clean" x (App. H)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not _is_real(self.eps) or not math.isfinite(self.eps) or self.eps < 0:
            _fail("eps", self.eps, "give a non-negative number, e.g. eps=0.03 or eps=8/255")
        Objective.parse(self.objective)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            _fail("seed", self.seed, "give an integer, e.g. seed=0, or seed=None for a fresh one")
        if self.mode not in MODES:
            _fail("mode", self.mode, "use mode='eval' (default) or mode='train'")
        if not isinstance(self.fold_bn, bool) and self.fold_bn != "cpu":
            _fail("fold_bn", self.fold_bn, "use fold_bn=False (default), fold_bn=True or fold_bn='cpu' (fold on a "
                  "CPU only)")
        if self.fold_bn and self.mode != "eval":
            _fail("fold_bn", self.fold_bn,
                  "BatchNorm can only be folded in eval mode; use fold_bn=False with mode='train'")
        check_positive_int("select_batch", self.select_batch, 0, "select_batch=0 (automatic) or 512")
        if self.not_fooled not in NOT_FOOLED:
            _fail("not_fooled", self.not_fooled, "use not_fooled='best' (default: the attack's best iterate) or "
                  "not_fooled='clean' (paper App. H: clean x unless every exit is fooled)")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    return v


def check_positive_int(name: str, value: Any, minimum: int = 1, example: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, value, f"give an integer >= {minimum}{', e.g. ' + example if example else ''}")


def check_non_negative(name: str, value: Any, example: str = "") -> None:
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        _fail(name, value, f"give a non-negative number{', e.g. ' + example if example else ''}")


class Attack:
    """Base class: ``attack(model, x, y) -> x_adv`` with the objective, projection, mode and seed handled.

    Subclasses set ``name`` (the registry name), ``Config`` (a frozen dataclass deriving from
    :class:`AttackConfig`) and implement :meth:`run`.
    """

    name: ClassVar[str] = "attack"
    Config: ClassVar[type[AttackConfig]] = AttackConfig
    # Named presets, built as ``name.tag`` (``pgd.tiny``): config overrides on top of the defaults, which are
    # the paper's. ``tiny`` is the budget the contract tests run (a plugin declares its own; without one they
    # run the defaults).
    presets: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}}
    loss_fn: ClassVar[LossFn] = staticmethod(cross_entropy)  # type: ignore[assignment]

    def __init__(self, **config: Any) -> None:
        self.config = self.Config(**coerce_config(self.Config, f"attack {self.name!r}", config))
        self.objective = Objective.parse(self.config.objective)

    # -- public -------------------------------------------------------------------------------
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: Any = None) -> torch.Tensor:
        """``x_adv`` for the batch ``(x, y)``. ``index``: the samples' indices in the data set (one integer
        each), which key their random starts (see "seeding" in the module docstring)."""
        self.check_inputs(model, x, y)
        rng = AttackRNG(self.config.seed, x.device, sample_keys(index, len(x), x.device))
        x, y = x.detach(), y.detach()
        with model_mode(model, self.config.mode), torch.enable_grad():
            model = self._target(model, x)
            if self.objective.kind == "max-average":
                x_adv = self.max_average(model, x, y, rng)
            else:
                x_adv = self.run(model, x, y, self.objective, rng)
            if self.config.not_fooled == "clean":
                with torch.no_grad():
                    fooled = ~any_correct(attacked_outputs(model, x_adv, self.objective), y)
                x_adv = torch.where(fooled.view(-1, *[1] * (x.dim() - 1)), x_adv, x)
        return x_adv.detach()

    def with_candidates(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: Any = None
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x_adv, candidates)``: for ``max-average``, the same ``x_adv`` as :meth:`__call__` (same seed, starts
        and selection) and the ``[L, N, ...]`` candidates it was selected from, so that evaluation can score
        every candidate with one forward pass each instead of attacking again; other objectives: ``(x_adv,
        None)``."""
        if self.objective.kind != "max-average":
            return self(model, x, y, index=index), None
        self.check_inputs(model, x, y)
        rng = AttackRNG(self.config.seed, x.device, sample_keys(index, len(x), x.device))
        x, y = x.detach(), y.detach()
        with model_mode(model, self.config.mode), torch.enable_grad():
            target = self._target(model, x)
            cands = self._candidates(target, x, y, rng).detach()
            x_adv = select_max_average(target, cands, y, amp_dtype=self.amp_dtype,
                                       select_batch=self.config.select_batch, exit_loss=self.exit_loss)[0]
            if self.config.not_fooled == "clean":
                with torch.no_grad():
                    fooled = ~any_correct(attacked_outputs(target, x_adv, self.objective), y)
                x_adv = torch.where(fooled.view(-1, *[1] * (x.dim() - 1)), x_adv, x)
        return x_adv.detach(), cands

    def candidates(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: Any = None) -> torch.Tensor:
        """The max-average candidates ``[L, N, ...]``: candidate ``k`` is the single attack on exit ``k``
        (Eq. 1), made with the same seed, mode and budget as :meth:`__call__` uses."""
        self.check_inputs(model, x, y)
        rng = AttackRNG(self.config.seed, x.device, sample_keys(index, len(x), x.device))
        with model_mode(model, self.config.mode), torch.enable_grad():
            return self._candidates(self._target(model, x), x.detach(), y.detach(), rng).detach()

    def _target(self, model: nn.Module, x: torch.Tensor) -> nn.Module:
        """The module the attack differentiates: ``model``, or its BatchNorm-folded copy with ``fold_bn``
        (``fold_bn="cpu"``: only when ``x`` is on a CPU)."""
        fold = self.config.fold_bn is True or (self.config.fold_bn == "cpu" and x.device.type == "cpu")
        return fold_batchnorm(model) if fold else model

    def describe(self) -> dict[str, Any]:
        """Fully resolved config, JSON-ready, for result files."""
        return {"name": self.name, "config": self.config.to_dict(), "model_mode": self.config.mode}

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in asdict(self.config).items())
        return f"{type(self).__name__}({cfg})"

    # -- for subclasses ------------------------------------------------------------------------
    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Objective,
            rng: AttackRNG) -> torch.Tensor:
        """One attack on a single-exit (``exit:k``) or ``average`` objective. A sample it does not fool at
        every attacked exit gets its best iterate (the ``"best"`` rule; the base applies ``"clean"``)."""
        raise NotImplementedError

    def max_average(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: AttackRNG) -> torch.Tensor:
        cands = self._candidates(model, x, y, rng)
        return select_max_average(model, cands, y, amp_dtype=self.amp_dtype, select_batch=self.config.select_batch,
                                  exit_loss=self.exit_loss)[0]

    def exit_loss(self, logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
        """Per-sample loss of exit ``k`` that the attack raises and that max-average selection averages.
        Default: :attr:`loss_fn` (cross-entropy), the same at every exit; a subclass may make it depend on
        ``k``."""
        return self.loss_fn(logits, y)

    def _candidates(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: AttackRNG) -> torch.Tensor:
        """Default: the L single attacks one after another."""
        return torch.stack([self.run(model, x, y, Objective("exit", k), rng)
                            for k in range(num_exits(model))])

    @property
    def amp_dtype(self) -> str | None:
        return getattr(self.config, "amp_dtype", None)

    def check_inputs(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.objective.check(model)
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise UsageError("x must be a batch tensor [N, C, H, W] of pixels in [0, 1]")
        if not isinstance(y, torch.Tensor) or y.shape != x.shape[:1]:
            raise UsageError(f"y must hold one label per sample: got y of shape {tuple(getattr(y, 'shape', ()))} "
                             f"for x of shape {tuple(x.shape)}")
        lo, hi = torch.stack(torch.aminmax(x.detach())).tolist() if x.numel() else (0.0, 1.0)  # one sync on a GPU
        if lo < 0.0 or hi > 1.0:
            raise UsageError("x must be pixels in [0, 1] (normalization is the model's first layer); "
                             "pass un-normalized images")
