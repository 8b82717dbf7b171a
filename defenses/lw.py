"""``lw``: adversarial training with a penalty on the exit classifiers' weights (the paper's "LW" baseline).

Source: Chen, Shen, Wang & Wang, "Towards improving fast adversarial training in multi-exit network",
Neural Networks 150:1-11, 2022 (NEO-KD's reference [3]); NEO-KD (Ham et al., NeurIPS 2023) Sec. 1 ("given
the adversarial example constructed in [12], the authors of [3] proposed a regularization term to reduce the
weights of the classifier at each exit") and Sec. 4.1 ("the regularizer restricts the weights of the fully
connected layers (classifiers)").

**We could not find the exact form of the regularizer.** The paper's full text and code were not available
to us. What we found: its abstract (the FC weight norm of a non-overfitted exit is much smaller than that
of an overfitted exit; catastrophic overfitting occurs when late exits have larger weight norms than early
exits), and a third-party review of the paper (KAIST "awesome-reviews", 2022) saying that an L2
regularization is put on each exit's fully connected layer with a larger weight for deeper exits, with
lambda = [0.1, 0.1, 0.1, 0.15, 0.15, 0.15, 0.15] for the 7-exit MSDNet on CIFAR-100.

What we implement (the most defensible reading of the above), averaged over the batch::

    sum_i [CE(f_i(x), y) + CE(f_i(x_adv), y)] + sum_i lambda_i * ||W_i||_F^2           (Eq. 4 + penalty)

* ``W_i`` is the weight matrix (not the bias) of the fully connected layer that produces exit i's logits,
  found generically: the ``nn.Linear`` whose output tensor *is* the logits tensor the model returns for
  exit i (a model may instead expose ``exit_classifiers() -> list[nn.Linear]``);
* the penalty is the squared Frobenius norm (L2 regularization in the weight-decay sense);
* lambda (``weights``) defaults to 0.1 for the first three exits and 0.15 for the later ones: exactly the
  reported 7-exit CIFAR-100 setting, and the same rule for other exit counts ([0.1]*3 for 3 exits,
  [0.1,0.1,0.1,0.15,0.15] for 5);
* the adversarial examples are the shared training attack (max-average PGD-7), not the paper's fast
  single-step (FGSM-style) attack, since NEO-KD compares every baseline under the same attack.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UsageError
from .base import Defense, DefenseConfig, ce_sum

_NOT_FOUND = (
    "we could not find the exact LW regularizer of Chen et al. 2022; implemented as "
    "lambda_i * squared Frobenius norm of the weight of exit i's last (logit-producing) fully "
    "connected layer, lambda = 0.1 for exits 1-3 and 0.15 after (a third-party review's "
    "CIFAR-100 setting)"
)


def default_weights(num_exits: int) -> tuple[float, ...]:
    """0.1 for the first three exits, 0.15 for the later ones (the reported 7-exit CIFAR-100 lambda)."""
    return tuple(0.1 if i < 3 else 0.15 for i in range(num_exits))


def find_exit_classifiers(model: nn.Module, x: Tensor) -> list[nn.Linear]:
    """The ``nn.Linear`` that produces each exit's logits. Uses ``model.exit_classifiers()`` when the model
    has it; otherwise runs one no-grad forward pass on ``x[:1]`` with hooks on every ``nn.Linear`` and
    matches each returned logits tensor to the module whose output it is."""
    fn = getattr(model, "exit_classifiers", None)
    if callable(fn):
        return list(fn())
    pairs: list[tuple[Tensor, nn.Linear]] = []  # keeps every output alive, so identity checks are sound
    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lambda mod, _inp, out: pairs.append((out, mod))))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            logits = list(model(x[:1]))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    found = [next((mod for out, mod in pairs if out is z), None) for z in logits]
    if any(f is None for f in found):
        missing = [i for i, f in enumerate(found) if f is None]
        raise UsageError(
            f"lw: exits {missing} of {type(model).__name__} do not end in an nn.Linear whose output is the "
            "logits; give the model an exit_classifiers() method returning one nn.Linear per exit"
        )
    return found  # type: ignore[return-value]


@dataclass(frozen=True)
class LWConfig(DefenseConfig):
    """weights: per-exit lambda of the classifier-weight penalty (None -> 0.1 for exits 1-3, 0.15 after)."""

    weights: tuple[float, ...] | None = None


class LW(Defense):
    """Adv (Eq. 4) + sum_i lambda_i ||W_i||^2 on each exit's final fully connected layer (see module docstring)."""

    name = "lw"
    Config = LWConfig
    source = (
        "Chen, Shen, Wang & Wang, Towards improving fast adversarial training in multi-exit network, "
        "Neural Networks 150, 2022 (form reconstructed; see assumptions)"
    )
    assumptions = (
        _NOT_FOUND,
        "Penalty on the weight matrix only (not the bias), summed over exits and added to Eq. 4.",
        "LW is trained with the shared max-average PGD-7 examples (not the original fast/single-step attack).",
    )

    def __init__(self, **config_kwargs: Any) -> None:
        super().__init__(**config_kwargs)
        self._heads: weakref.WeakKeyDictionary[nn.Module, list[nn.Linear]] = weakref.WeakKeyDictionary()

    def normalize_kwargs(self, kw: dict[str, Any]) -> dict[str, Any]:
        w = kw.get("weights")
        if w is not None:
            if isinstance(w, (int, float)):
                w = (w,)
            try:
                kw["weights"] = tuple(float(v) for v in w)
            except (TypeError, ValueError):
                raise UsageError(f"weights {w!r} must be a list of numbers, one per exit") from None
        return kw

    def validate(self, cfg: LWConfig) -> None:
        if cfg.weights is not None and any(not v >= 0 for v in cfg.weights):
            raise UsageError(f"weights must be >= 0 (got {list(cfg.weights)}); e.g. weights=[0.1,0.1,0.1]")

    def resolve(self, cfg: LWConfig) -> LWConfig:
        assert self.num_exits is not None
        if cfg.weights is None:
            cfg = dataclasses.replace(cfg, weights=default_weights(self.num_exits))
        if len(cfg.weights) != self.num_exits:
            raise UsageError(
                f"weights has {len(cfg.weights)} values but the model has {self.num_exits} exits; "
                f"pass one per exit, e.g. weights={list(default_weights(self.num_exits))}"
            )
        return cfg

    def classifiers(self, model: nn.Module, x: Tensor) -> list[nn.Linear]:
        heads = self._heads.get(model)
        if heads is None:
            heads = find_exit_classifiers(model, x)
            self._heads[model] = heads
        return heads

    def loss(
        self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        heads = self.classifiers(model, x)
        clean = list(model(x))
        adv = list(model(x_adv))
        weights = self.config.weights if self.config.weights is not None else default_weights(len(clean))
        if len(weights) != len(clean):
            raise UsageError(f"weights has {len(weights)} values but the model returned {len(clean)} exits")
        ce_clean, ce_adv = ce_sum(clean, y), ce_sum(adv, y)
        reg = sum(w * h.weight.float().pow(2).sum() for w, h in zip(weights, heads))
        loss = ce_clean + ce_adv + reg
        return loss, {"ce_clean": ce_clean.detach(), "ce_adv": ce_adv.detach(), "weight_reg": reg.detach()}
