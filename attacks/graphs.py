"""CUDA-graph replay of an attack's fixed computation (GPU only).

On a GPU, a training attack on MSDNet at batch 128 is thousands of small kernels, and the host cannot launch
them as fast as the device runs them: the NEO-KD step on an NVIDIA H200 computed for about 60% of its time
and waited for launches the rest (``benchmarks/README.md``, "GPU figures"). A CUDA graph records the kernels
of one call once and replays them with one launch.

What is recorded is everything after the random starts: the PGD iterations and, for max-average, the
selection. The starts are drawn eagerly (from the attack's own generator, as without graphs) and copied into
the graph's input buffers, so the graphed attack computes the same function of the same random numbers.

Safety, i.e. when a replay computes what an eager call would:

* the graph reads the model's parameters and buffers where they live: in-place updates (the optimizer's
  step, BatchNorm's running statistics, ``load_state_dict``) are seen by the next replay; a parameter that
  moves (``model.to``, a new tensor assigned) changes the cache key, and the graph is recorded again;
* the key also holds the input shapes, dtypes and strides, the device, the autocast state around the call,
  the attack's class and its resolved config, and the model's mode flags;
* recording runs with autocast's weight cache off, so no cast computed before the recording (and frozen in
  it) or inside it (never computed outside the replay) is shared with eager code;
* a model is recorded only where its forward declares itself safe for capture (``graph_safe = True``, set by
  this project's SmallCNN and MSDNet, and not inherited by a subclass that overrides ``forward``): no host
  synchronization, no data-dependent control flow, nothing random in the mode the attack runs in.

If recording fails (out of memory, an operation that cannot be captured) the attack warns once and runs
eagerly for that key. Each model keeps at most :data:`MAX_GRAPHS` recordings (training: the full batch and the
last one of an epoch; evaluation: one per attack objective and batch shape), least recently used first out.
A model's recordings share one memory pool: they never run at the same time, and each returns a copy of its
output, so one recording's intermediate buffers may be another's.
"""

from __future__ import annotations

import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import torch
from torch import nn

MAX_GRAPHS = 16
WARMUP = 2  # eager calls on a side stream before recording (cuDNN's choices, autograd's lazy state)

_FAILED = object()
_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[object, OrderedDict[Hashable, object]]] = (
    weakref.WeakKeyDictionary())


FORWARDS = ("forward", "forward_exits", "forward_last", "forward_cascade")


def graph_safe(model: nn.Module) -> bool:
    """True when ``model`` declares its forward passes safe for CUDA-graph capture (``graph_safe = True``) in a
    class no higher in the hierarchy than any class defining one of them (:data:`FORWARDS`): a subclass that
    overrides ``forward`` (a wrapper, input quantization) is not vouched for by its parent's flag."""
    if not getattr(model, "graph_safe", False):
        return False
    mro = type(model).__mro__
    owner = next(c for c in mro if "graph_safe" in vars(c))
    definers = [next((c for c in mro if name in vars(c)), None) for name in FORWARDS]
    return all(d is None or issubclass(owner, d) for d in definers)


class _Recording:
    """One CUDA graph of ``fn(*inputs) -> tensor`` with its static input and output buffers."""

    def __init__(self, fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], pool: object) -> None:
        device = inputs[0].device
        self.inputs = [t.detach().clone() for t in inputs]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                fn(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):
            self.output = fn(*self.inputs)

    def __call__(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        for buf, t in zip(self.inputs, inputs):
            buf.copy_(t)
        self.graph.replay()
        return self.output.clone()


def model_key(model: nn.Module, *more: torch.Tensor) -> tuple:
    """Where ``model``'s parameters and buffers (and ``more`` tensors) live, and its modules' mode flags: what a
    recording reads in place, so a change means recording again."""
    tensors = [*model.parameters(), *model.buffers(), *more]
    return (tuple(t.data_ptr() for t in tensors), tuple(m.training for m in model.modules()))


def autocast_key(device: torch.device) -> tuple:
    """The autocast state on ``device``'s kind: (enabled, dtype)."""
    kind = device.type
    return (torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))


def recording_autocast(device: torch.device) -> torch.autocast:
    """The current autocast state with its weight cache off, for recording a graph: a cast cached before the
    recording would be frozen into it, and one made inside it never exists outside a replay."""
    enabled, dtype = autocast_key(device)
    return torch.autocast(device.type, dtype=dtype, enabled=enabled, cache_enabled=False)


def replay(model: nn.Module, key: Hashable, fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor]
           ) -> torch.Tensor:
    """``fn(*inputs)``, through a CUDA graph of it recorded on the first call with this ``key`` (the caller's
    description of ``fn``'s computation: the attack's class and config) for this model, these input
    shapes and this autocast state. ``fn`` must compute the same kernels for every call with the same key,
    read nothing but ``inputs`` and ``model``'s parameters and buffers, and return one tensor."""
    device = inputs[0].device
    full_key = (key, model_key(model), autocast_key(device), str(device),
                tuple((tuple(t.shape), t.dtype, t.stride()) for t in inputs))
    if model not in _CACHE:
        _CACHE[model] = (torch.cuda.graph_pool_handle(), OrderedDict())
    pool, cache = _CACHE[model]
    rec = cache.get(full_key)
    if rec is None:
        try:
            with recording_autocast(device):
                rec = _Recording(fn, inputs, pool)
        except Exception as exc:  # noqa: BLE001 - any failure to record means: run eagerly
            warnings.warn(f"attack: CUDA-graph recording failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); running eagerly "
                          "(set cuda_graph='off' to skip the attempt)", stacklevel=3)
            torch.cuda.synchronize(device)
            rec = _FAILED
        cache[full_key] = rec
        while len(cache) > MAX_GRAPHS:
            cache.popitem(last=False)
    cache.move_to_end(full_key)
    if rec is _FAILED:
        return fn(*inputs)
    return rec(inputs)  # type: ignore[operator]


def clear(model: nn.Module | None = None) -> None:
    """Drop the recordings of ``model`` (of every model when None), and the device memory they hold."""
    if model is None:
        _CACHE.clear()
    else:
        _CACHE.pop(model, None)
