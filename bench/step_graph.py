"""The second half of a training step (loss, backward, gradient clipping, optimizer step) replayed as one CUDA
graph on a GPU (``TrainConfig.cuda_graph``).

The first half, the training attack, is replayed by :mod:`neokd_bench.attacks.graphs`. What remains of the
step on an NVIDIA H200 is a few thousand kernels for MSDNet (two forward passes, the backward with weight
gradients, the loss terms, SGD's update): launched one by one from Python they cost host time the device then
waits for. Recorded once, they are one launch per step.

How it stays the eager step:

* **Real steps first.** Recording needs eager warm-up calls, and a warm-up call of a training step is a
  training step. So the first :data:`WARMUP` steps after each (re)start are run eagerly (on a side stream, as
  CUDA graphs need) and count as training steps; the next one is recorded and replayed, and so are the rest.
  Nothing is computed twice and no step is skipped.
* **Recorded again whenever what the kernels bake in changes**: the learning rate of any parameter group
  (the schedule's milestones), the defense's :meth:`~neokd_bench.defenses.base.Defense.graph_key` (by
  default the epoch; ``adv`` has no per-epoch state, and NEO-KD keeps its EOKD permutation in a device
  buffer that each epoch updates in place, so both say None), the batch shape (the last, smaller batch
  of an epoch runs eagerly, as a new shape would otherwise mean warm-up steps on it), the autocast state,
  and where parameters, buffers and optimizer state live.
* **Which defenses**: those whose class declares ``graph_safe = True`` (not inherited: a subclass says it
  again) and keeps the default ``training_step`` (adversarial examples, then ``loss``). Their ``loss`` must
  run no host synchronization and read nothing but its arguments, the model and state that is fixed within
  an epoch and kept on the device. ``adv`` and ``neokd`` (with ``nkd`` and ``eokd``) declare it.
* **Recording runs with autocast's weight cache off**, so no bf16 cast is frozen into the graph.
* If recording fails, training warns once and goes on eagerly.

The trainer reads the loss and its parts from the graph's output buffers right after each replay, and runs
its divergence check on them, as for an eager step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .attacks.graphs import autocast_key, model_key, recording_autocast

WARMUP = 2

CUDA_GRAPH_CHOICES = ("auto", "off")


def defense_graph_safe(defense: Any) -> bool:
    """True when ``defense``'s class declares its loss safe for capture and keeps the default training step."""
    from .defenses.base import Defense

    cls = type(defense)
    return bool(vars(cls).get("graph_safe", False)) and getattr(cls, "training_step", None) is Defense.training_step


class GraphedLossStep:
    """``loss, parts = step(x, x_adv, y)``: the defense's loss, ``zero_grad``, backward, optional gradient
    clipping and the optimizer step, eager for the warm-up steps and replayed from a CUDA graph after.
    ``autocast`` builds the loss's autocast context (or is None): built per call, so that inside a recording
    it takes the weight-cache-off setting of :func:`~neokd_bench.attacks.graphs.recording_autocast`."""

    def __init__(self, model: nn.Module, defense: Any, opt: torch.optim.Optimizer, params: Sequence[Tensor],
                 clip: float | None, autocast: Callable[[], Any] | None) -> None:
        self.model, self.defense, self.opt, self.params, self.clip = model, defense, opt, list(params), clip
        self.autocast = autocast
        self.key: tuple | None = None
        self.full_shape: tuple | None = None
        self.warm = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self.replays = 0
        self.recordings = 0

    # -- the step, eagerly ---------------------------------------------------------------------
    def _loss(self, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.autocast is not None:
            with self.autocast():
                return self.defense.loss(self.model, x, x_adv, y)
        return self.defense.loss(self.model, x, x_adv, y)

    def _update(self, loss: Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()

    def eager(self, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss, parts = self._loss(x, x_adv, y)
        self._update(loss)
        return loss.detach(), parts

    # -- the key: what the recorded kernels bake in ----------------------------------------------
    def _key(self, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple:
        state = [t for s in self.opt.state.values() for t in s.values() if isinstance(t, Tensor)]
        return (tuple((tuple(t.shape), t.dtype, t.stride()) for t in (x, x_adv, y)),
                tuple(g["lr"] for g in self.opt.param_groups), self.defense.graph_key(),
                autocast_key(x.device), model_key(self.model, *state))

    def __call__(self, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.failed:
            return self.eager(x, x_adv, y)
        if self.full_shape is None:
            self.full_shape = tuple(x.shape)
        if tuple(x.shape) != self.full_shape:  # the last batch of an epoch: eager, the recording kept
            return self.eager(x, x_adv, y)
        key = self._key(x, x_adv, y)
        if key != self.key:
            self.key, self.warm, self.graph = key, 0, None
        if self.graph is None and self.warm < WARMUP:
            self.warm += 1
            side = torch.cuda.Stream(x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                out = self.eager(x, x_adv, y)
            torch.cuda.current_stream(x.device).wait_stream(side)
            return out
        if self.graph is None:
            try:
                self._record(x, x_adv, y)
            except Exception as exc:  # noqa: BLE001 - any failure to record means: train eagerly
                warnings.warn(f"trainer: CUDA-graph recording of the loss step failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); training eagerly "
                              "(TrainConfig.cuda_graph='off' skips the attempt)", stacklevel=2)
                torch.cuda.synchronize(x.device)
                self.failed, self.graph = True, None
                self.opt.zero_grad(set_to_none=True)
                return self.eager(x, x_adv, y)
            self.key = self._key(x, x_adv, y)  # recording may have allocated; the key is what replays read
        for buf, t in zip(self.inputs, (x, x_adv, y)):
            buf.copy_(t)
        self.graph.replay()  # type: ignore[union-attr]
        self.replays += 1
        return self.loss, self.parts

    def _record(self, x: Tensor, x_adv: Tensor, y: Tensor) -> None:
        self.inputs = [t.detach().clone() for t in (x, x_adv, y)]
        graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)  # gradients are allocated inside the graph's pool
        torch.cuda.synchronize(x.device)
        with recording_autocast(x.device), torch.cuda.graph(graph, capture_error_mode="thread_local"):
            loss, parts = self._loss(*self.inputs)
            self._update(loss)
        self.loss, self.parts = loss.detach(), {k: v.detach() for k, v in parts.items()}
        self.graph = graph
        self.recordings += 1
