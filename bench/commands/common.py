"""What several commands share: option checks (seeds, eps, ``--set KEY=VALUE``) and reading the checkpoint
of a run with the data it was trained on (``eval``, ``masking``). Torch is imported only where a function
needs it, so that building the command line stays light."""

from __future__ import annotations

import math
from typing import Any

from ..errors import UsageError, check
from ..safe_io import NotJSONError, loads_json

SEED_MAX = 2**63 - 1
EPS_FORCE_FACTOR = 4  # an eps more than this many times the dataset's threat model needs --force


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["alpha=2", "gamma=[1,1,1.5]"]`` -> ``{"alpha": 2, "gamma": (1, 1, 1.5)}``: each value read as JSON
    when it is JSON (a list becomes a tuple), else kept as text; ``-`` in a key becomes ``_``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        check(bool(sep and key), f"--set expects KEY=VALUE, got {item!r}; e.g. --set alpha=3")
        try:  # bounded: a deep list or a huge integer is one line, not a RecursionError or ValueError
            val: Any = loads_json(raw, f"--set {key}")
        except NotJSONError:
            val = raw
        out[key.strip().replace("-", "_")] = tuple(val) if isinstance(val, list) else val
    return out


def check_seed(seed: int, flag: str = "--seed") -> None:
    check(0 <= seed <= SEED_MAX, f"{flag} must be in 0..{SEED_MAX} (a 63-bit seed), got {seed}; e.g. {flag} 0")


def check_eps(eps: float | None, dataset: str, force: bool, flag: str = "--eps") -> None:
    """eps is a distance between images in [0, 1]: above 1 it is meaningless; far above the dataset's
    threat model it is almost surely a typo (5 for 0.5/255), so it needs --force."""
    if eps is None:
        return
    check(math.isfinite(eps) and 0 <= eps <= 1, f"{flag} must be in [0, 1] (inputs are pixels in [0, 1]), "
                                                f"got {eps}; e.g. {flag} 0.1")
    from ..presets import THREAT

    t = THREAT.get(dataset)
    if t is not None and eps > EPS_FORCE_FACTOR * t.eps and not force:
        raise UsageError(f"{flag} {eps} is more than {EPS_FORCE_FACTOR}x {dataset}'s threat model (eps {t.eps:.4g}); "
                         f"pass --force to run it anyway")


def load_run_checkpoint(path: Any) -> dict[str, Any]:
    """A checkpoint written by `neokd-bench run` (``weights_only`` load), with the keys every command reads:
    ``model_name``, ``dataset`` (a name) and ``model``. One line naming the file otherwise."""
    from ..trainer import load_checkpoint

    state = load_checkpoint(path)
    for key in ("model_name", "dataset", "model"):
        check(key in state, f"{path} has no {key!r}; pass a checkpoint.pt written by `neokd-bench run`")
    check(isinstance(state["dataset"], str), f"{path}: dataset is not a name; pass a checkpoint.pt "
                                             f"written by `neokd-bench run`")
    return state


def load_checkpoint_data(state: dict[str, Any], data_root: str | None, val_size: int | None, name: Any) -> Any:
    """The dataset a checkpoint was trained on: from ``--data-root`` when given (any source), else where the
    checkpoint says. A source the dataset does not have is named with the checkpoint."""
    import neokd_bench as nb

    from ..data.common import SOURCES

    source = "auto" if data_root else state.get("data_source") or "auto"
    check(source in SOURCES, f"{name} records data source {source!r}; pass --data-root DIR")
    root = data_root or state.get("data_root")
    vs = val_size if val_size is not None else state.get("val_size")
    try:
        return nb.load_dataset(state["dataset"], root=root, source=source, val_size=vs)
    except UsageError as exc:
        if data_root or source == "auto":
            raise
        raise UsageError(f"{name} was trained on {state['dataset']} from source {source!r}: {exc}") from exc
