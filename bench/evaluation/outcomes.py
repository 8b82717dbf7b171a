"""Per-sample outcomes in the result file, and the worst case per exit computed from them (docs/design.md).

Evaluation keeps, for every test sample it attacked, whether each exit was right: on the clean image, on the
``x_adv`` of every attack and attack seed, and on every candidate a ``max-average`` attack chose from (the
single-exit attack on each exit; one forward pass each, the attack is not run again). They are stored in
``evaluation.outcomes`` (result schema 3) as packed bits:

* ``bits``: ``base64(numpy.packbits(table))`` of the boolean table ``[sample, exit]`` flattened row-major
  (numpy's default big-endian bit order; the last byte is padded with zeros);
* ``indices``: the samples' positions in the evaluated test split as half-open ranges ``[[start, stop],
  ...]`` in the order of the table's rows.

Every anytime number of the result can be recomputed from these records (:func:`record_table`), and
:func:`worst_case` is computed from the stored section only, so what the file says and what evaluation
printed are one computation.

**Worst case per exit.** A sample counts as robust at exit ``k`` only if exit ``k`` is right on every
adversarial example evaluation made for it (every attack, every max-average candidate, every attack seed) and
on the clean image (the zero perturbation lies in the threat model too). A part measured on fewer samples (the
protocol's per-exit APGD-DLR and Square on the first images) joins where it ran. Only attacks whose ``eps``
is within the threat model's (``outcomes.eps``) join.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

ENCODING = ("numpy.packbits of the boolean [sample, exit] table flattened row-major (big-endian bit order), "
            "base64; indices: half-open ranges of test-set positions, in row order")


def pack_bits(table: np.ndarray) -> str:
    """``[n, L]`` booleans as base64 of their packed bits (row-major)."""
    return base64.b64encode(np.packbits(np.asarray(table, dtype=bool).reshape(-1)).tobytes()).decode("ascii")


def unpack_bits(text: str, n: int, num_exits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the ``[n, num_exits]`` boolean table."""
    raw = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype=np.uint8)
    if len(raw) != -(-n * num_exits // 8):
        raise ValueError(f"packed outcomes hold {8 * len(raw)} bits, expected {n} samples x {num_exits} exits")
    bits = np.unpackbits(raw, count=n * num_exits)
    return bits.astype(bool).reshape(n, num_exits)


def to_ranges(indices: Iterable[int]) -> list[list[int]]:
    """Sorted-or-not integer positions as half-open ranges in the same order: ``[0, 1, 2, 7] -> [[0, 3], [7, 8]]``."""
    out: list[list[int]] = []
    for i in (int(v) for v in indices):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def from_ranges(ranges: Sequence[Sequence[int]]) -> np.ndarray:
    """Inverse of :func:`to_ranges`."""
    if not ranges:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(int(a), int(b), dtype=np.int64) for a, b in ranges])


def record(table: np.ndarray, indices: Sequence[int] | np.ndarray, **meta: Any) -> dict[str, Any]:
    """One stored record: ``meta`` (label, seed, candidate), the sample ranges and the packed table."""
    table = np.asarray(table, dtype=bool)
    if len(table) != len(indices):
        raise ValueError(f"{len(table)} outcome rows for {len(indices)} sample indices")
    return {**meta, "indices": to_ranges(indices), "bits": pack_bits(table)}


def record_table(rec: dict[str, Any], num_exits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices [m], table [m, L])`` of a stored record."""
    idx = from_ranges(rec["indices"])
    return idx, unpack_bits(rec["bits"], len(idx), num_exits)


def part_label(label: str, candidate: str | None) -> str:
    """How a record is named among the worst case's parts: the attack label, or ``label[exit:k]`` for the
    candidate of a max-average attack built against exit ``k``."""
    return label if candidate is None else f"{label}[{candidate}]"


def outcomes_section(*, n: int, num_exits: int, eps: float | None, clean_top1: np.ndarray,
                     attacks: Sequence[tuple[str, Sequence[int], Sequence[Any], np.ndarray]]) -> dict[str, Any]:
    """``evaluation.outcomes``. ``attacks``: ``(label, seeds, outs, indices)`` with ``outs[i]`` the
    :class:`~.anytime.ExitOutcomes` of seed ``seeds[i]`` on the test positions ``indices``; a max-average
    attack's ``cand_top1`` (``[m, C, L]``) adds one record per candidate."""
    everyone = np.arange(n)
    records = []
    for label, seeds, outs, idx in attacks:
        for seed, out in zip(seeds, outs):
            records.append(record(out.top1, idx, label=label, seed=int(seed), candidate=None))
            cand = getattr(out, "cand_top1", None)
            if cand is not None:
                for c in range(cand.shape[1]):
                    records.append(record(cand[:, c, :], idx, label=label, seed=int(seed), candidate=f"exit:{c}"))
    return {"encoding": ENCODING, "n": int(n), "num_exits": int(num_exits),
            "eps": None if eps is None else float(eps),
            "clean": record(clean_top1, everyone), "records": records}


def joins(attack: dict[str, Any] | None, eps: float | None) -> bool:
    """Whether an attack's examples lie in the threat model: its recorded ``eps`` is at most ``eps``."""
    if eps is None:
        return True
    a_eps = ((attack or {}).get("config") or {}).get("eps")
    return not isinstance(a_eps, (int, float)) or float(a_eps) <= float(eps) + 1e-12


def robust_table(section: dict[str, Any], attacks: dict[str, Any] | None = None
                 ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """``(robust [n, L], parts)``: the worst case per sample and exit from a stored ``outcomes`` section, and the
    parts that joined it (``{"label", "n", "seeds"}``; ``n``: the samples it covered). ``attacks``:
    ``evaluation.attacks`` (for each attack's eps; None: every record joins)."""
    n, L = int(section["n"]), int(section["num_exits"])
    idx, clean = record_table(section["clean"], L)
    robust = np.zeros((n, L), dtype=bool)
    robust[idx] = clean
    parts: dict[str, dict[str, Any]] = {"clean": {"label": "clean", "n": int(len(np.unique(idx))), "seeds": []}}
    covered: dict[str, set[int]] = {}
    for rec in section["records"]:
        if attacks is not None and not joins(attacks.get(rec["label"]), section.get("eps")):
            continue
        ridx, table = record_table(rec, L)
        robust[ridx] &= table
        name = part_label(rec["label"], rec.get("candidate"))
        p = parts.setdefault(name, {"label": name, "n": 0, "seeds": []})
        if int(rec["seed"]) not in p["seeds"]:
            p["seeds"].append(int(rec["seed"]))
        covered.setdefault(name, set()).update(int(i) for i in ridx)
    for name, cov in covered.items():
        parts[name]["n"] = len(cov)
    return robust, list(parts.values())


def worst_case(section: dict[str, Any], attacks: dict[str, Any] | None = None) -> dict[str, Any]:
    """``evaluation.anytime.worst_case``: the shape of an ``anytime.adversarial`` entry (one row: the worst case
    is over every seed at once, so its std is 0) plus ``n`` and ``parts``."""
    robust, parts = robust_table(section, attacks)
    per_exit = [float(v) for v in robust.mean(axis=0)] if len(robust) else [0.0] * int(section["num_exits"])
    avg = float(np.mean(per_exit))
    seeds = sorted({s for p in parts for s in p["seeds"]})
    return {"seeds": seeds, "n": int(section["n"]),
            "top1": {"mean": per_exit, "std": [0.0] * len(per_exit), "per_seed": [per_exit],
                     "avg": {"mean": avg, "std": 0.0, "per_seed": [avg]}},
            "parts": parts}
