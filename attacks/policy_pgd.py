"""Policy-aware PGD (``policy-pgd``): an attacker who knows the exit policy and its thresholds.

Max-average PGD (Eq. 2) attacks the exits; a budgeted deployment only ever reads one of them per sample,
the exit where its policy stops the sample. This attack maximizes the loss *at that exit*, through a
differentiable surrogate of the threshold cascade:

* ``s_k = sigmoid((score_k - t_k) / T)``, the soft probability of leaving at exit ``k`` given the sample
  reached it, with ``score_k`` the policy's differentiable score
  (:meth:`~neokd_bench.evaluation.policies.ExitPolicy.soft_scores`: max softmax, minus entropy, or a
  relaxed agreement run) and ``t_k`` its threshold (``None`` = +inf: nobody leaves at ``k``); the last
  exit takes everything left (``s_{L-1} = 1``);
* ``q_k = s_k * prod_{j<k} (1 - s_j)``, the soft probability of leaving at ``k``;
* loss ``= sum_k q_k * NLL_k``, with ``NLL_k = -log P_k[y]`` the negative log-likelihood of the
  prediction the policy would return at exit ``k`` (with ``ensemble``, the mean softmax of exits
  ``0..k``, docs/design.md "Ensemble strategy").

The attacker thus gains both by making the prediction wrong where the sample leaves and by moving the
sample to an exit where it is wrong. ``T`` is annealed geometrically from ``temperature`` (first step) to
``temperature_end`` (last step), so the surrogate starts smooth and ends close to the hard cascade.
Each sample keeps its best iterate under the *hard* cascade (:func:`hard_policy_key`: wrong at the exit
the policy takes, then the largest NLL there), the attack's own objective.

Same threat model and loop as PGD (random start, sign-gradient steps, projection onto the eps-ball and
[0, 1]). Objective ``average`` (default) is the policy surrogate above; ``exit:k`` and ``max-average``
are PGD's (the policy plays no part in them), so the attack keeps the base contract.

``thresholds`` come from the budgeted evaluation (validation data only); the evaluation builds one attack
per budget it tests. Without thresholds the attack raises a one-line :class:`UsageError`.

Example::

    attack = neokd_bench.create_attack("policy-pgd", eps=0.1, step_size=0.025, steps=50,
                                       policy="max-softmax", thresholds=[0.9, 0.8, None])
    x_adv = attack(model, x, y)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .base import AttackRNG, Objective, _fail, autocast, num_exits, project
from .pgd import PGD, PGDConfig


@dataclass(frozen=True, kw_only=True)
class PolicyPGDConfig(PGDConfig):
    """PGD's fields plus the policy, its thresholds (one per exit; ``None`` = +inf) and the annealing."""

    objective: str = "average"
    policy: str = "max-softmax"
    thresholds: tuple[float | None, ...] = ()
    ensemble: bool = True
    temperature: float = 0.1
    temperature_end: float = 0.01

    def validate(self) -> None:  # a list (JSON) is a tuple by now (bench.config coerces by type hints)
        super().validate()
        if not isinstance(self.thresholds, tuple) or not all(
                t is None or (isinstance(t, (int, float)) and not isinstance(t, bool) and not math.isnan(t))
                for t in self.thresholds):
            _fail("thresholds", self.thresholds, "give one number per exit (None = nobody leaves there), "
                                                 "e.g. thresholds=[0.9, 0.8, None]")
        for name in ("temperature", "temperature_end"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                _fail(name, v, f"give a positive number, e.g. {name}=0.1")
        if not isinstance(self.ensemble, bool):
            _fail("ensemble", self.ensemble, "use ensemble=True (default) or ensemble=False")
        from ..evaluation.policies import POLICIES

        if self.policy not in POLICIES:
            _fail("policy", self.policy, f"use one of {', '.join(POLICIES.names())}")


def soft_exit_loss(logits: list[torch.Tensor], y: torch.Tensor, policy, thresholds: torch.Tensor,
                   temperature: float, ensemble: bool = True) -> torch.Tensor:
    """Per-sample surrogate loss ``sum_k q_k * NLL_k`` (see the module docstring); ``thresholds`` (L,)
    may hold ``+inf``."""
    from ..evaluation.policies import ensemble_probs

    probs = torch.stack([F.softmax(z.float(), dim=1) for z in logits], dim=1)  # (N, L, C)
    pred = ensemble_probs(probs, ensemble)
    nll = -pred.gather(2, y.view(-1, 1, 1).expand(-1, pred.shape[1], 1)).squeeze(2).clamp_min(1e-12).log()
    leave = torch.sigmoid((policy.soft_scores(probs, ensemble) - thresholds.view(1, -1)) / temperature)
    leave = torch.cat([leave[:, :-1], torch.ones_like(leave[:, -1:])], dim=1)
    stay = torch.cumprod(1 - leave, dim=1)
    reach = torch.cat([torch.ones_like(stay[:, :1]), stay[:, :-1]], dim=1)
    return (reach * leave * nll).sum(1)


@torch.no_grad()
def hard_policy_key(logits: list[torch.Tensor], y: torch.Tensor, policy, thresholds: torch.Tensor,
                    ensemble: bool = True) -> torch.Tensor:
    """Per-sample rank of an iterate under the hard cascade: wrong at the exit the policy takes first, then
    the NLL there (larger is better for the attacker)."""
    from ..evaluation.policies import ensemble_probs

    probs = torch.stack([F.softmax(z.detach().float(), dim=1) for z in logits], dim=1)
    scores = policy.hard_scores(probs, ensemble)
    leaves = scores >= thresholds.view(1, -1)
    leaves[:, -1] = True
    exits = leaves.float().argmax(dim=1)
    pred = ensemble_probs(probs, ensemble)[torch.arange(len(y), device=y.device), exits]
    nll = -pred.gather(1, y.view(-1, 1)).squeeze(1).clamp_min(1e-12).log()
    return pred.argmax(1).ne(y).float() * 1e6 + nll.clamp(max=1e5)


class PolicyPGD(PGD):
    """L-inf PGD on the loss at the exit where a known policy stops the sample (soft cascade, annealed)."""

    name = "policy-pgd"
    # ``tiny``: the contract tests' budget, with thresholds for their 3-exit model (the evaluation passes its own)
    presets = {"paper": {}, "tiny": {"steps": 3, "step_size": 0.02, "thresholds": [0.5, 0.5, None]}}
    Config = PolicyPGDConfig
    config: PolicyPGDConfig

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Objective,
            rng: AttackRNG) -> torch.Tensor:
        if objective.kind != "average":
            return super().run(model, x, y, objective, rng)
        from ..evaluation.policies import create_policy

        cfg = self.config
        L = num_exits(model)
        if len(cfg.thresholds) != L:
            raise UsageError(f"policy-pgd needs one threshold per exit ({L}), got thresholds={list(cfg.thresholds)}; "
                             "take them from the budgeted evaluation, e.g. thresholds=[0.9, 0.8, None]")
        policy = create_policy(cfg.policy)
        t = torch.tensor([math.inf if v is None else float(v) for v in cfg.thresholds], device=x.device)
        ratio = (cfg.temperature_end / cfg.temperature) ** (1 / max(cfg.steps - 1, 1))
        adv = self._start(x, rng).detach()
        best, best_key = adv.clone(), torch.full((len(x),), -math.inf, device=x.device)
        for step in range(cfg.steps + 1):
            adv.requires_grad_(step < cfg.steps)
            with torch.set_grad_enabled(step < cfg.steps), autocast(x.device, cfg.amp_dtype):
                logits = model(adv)
            key = hard_policy_key(logits, y, policy, t, cfg.ensemble)  # keep each sample's best iterate
            better = key > best_key
            best[better], best_key = adv.detach()[better], torch.where(better, key, best_key)
            if step == cfg.steps:
                break
            loss = soft_exit_loss(logits, y, policy, t, cfg.temperature * ratio ** step, cfg.ensemble).mean()
            (g,) = torch.autograd.grad(loss, [adv])
            adv = project(adv.detach() + cfg.step_size * g.sign(), x, cfg.eps)
        return best
