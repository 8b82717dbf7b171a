"""The regression gate's arithmetic (no torch): what moved, by how much, and whether that fails.

**Defense regression** (:func:`defense_rows`). A fresh run is compared with the reference entry of the same
(dataset, preset, model, defense). For every metric (clean and each attack) and exit, with ``p`` and ``s`` the
reference's mean and sample standard deviation over its training seeds and ``n`` the fresh run's test-set size
(the worst case per exit is one of the metrics when every reference seed and the fresh run record it)::

    tolerance = max(Z_SEED * s, sqrt(p * (1 - p) / n))

that is, :data:`Z_SEED` seed standard deviations, never less than one binomial standard error of the test set
(the floor keeps a reference whose few seeds happen to agree from making the gate flaky). A fresh value below
``p - tolerance`` is a regression.

**Attack regression** (:func:`attack_rows`). A committed checkpoint attacked at a fixed seed and thread count
must not become more robust: a per-exit adversarial accuracy above the committed one by more than
:data:`ATTACK_TOL_SAMPLES` test samples (float noise between CPUs flips at most a sample or so) means an
attack has weakened.
"""

from __future__ import annotations

import math

Z_SEED = 2.5
ATTACK_TOL_SAMPLES = 2

DEFENSE_RULE = (f"rule: a fresh value fails when it is below the reference mean by more than "
                f"max({Z_SEED} x seed std of the reference, sqrt(p(1-p)/n) of the test set)")
ATTACK_RULE = (f"rule: the committed checkpoint's adversarial accuracy fails when it rises by more than "
               f"{ATTACK_TOL_SAMPLES} test samples at the committed seed and thread count (a weaker attack)")



def defense_rows(fresh: dict, reference_entry: dict) -> list[dict]:
    """One row per (metric, exit): reference mean, now, delta, tolerance and verdict (``ok`` / ``REGRESSION``)."""
    from .aggregate import metric_values

    rows = []
    n = fresh["evaluation"]["anytime"]["n"]
    L = fresh["model"]["num_exits"]
    for metric, acc in reference_entry["accuracy"].items():
        now_vals = [metric_values([fresh], metric, k) for k in range(L)]
        if not all(now_vals):
            continue
        for k in range(L):
            ref = acc["per_exit"][k]
            p, s = ref["mean"], ref["std"]
            tol = max(Z_SEED * s, math.sqrt(p * (1 - p) / n))
            now = now_vals[k][0]
            delta = now - p
            rows.append({"what": metric, "exit": k + 1, "reference": p, "now": now, "delta": delta,
                         "tolerance": tol, "verdict": "REGRESSION" if delta < -tol else "ok"})
    return rows


def attack_rows(reference: dict, measured: dict) -> list[dict]:
    """``reference``, ``measured``: ``{"n", "adversarial": {label: per-exit accuracy}}`` (n test samples)."""
    tol = ATTACK_TOL_SAMPLES / reference["n"]
    rows = []
    for label, ref in reference["adversarial"].items():
        for k, (r, m) in enumerate(zip(ref, measured["adversarial"][label])):
            rows.append({"what": label, "exit": k + 1, "reference": r, "now": m, "delta": m - r, "tolerance": tol,
                         "verdict": "ATTACK WEAKER" if m - r > tol else "ok"})
    if reference.get("worst_case") and measured.get("worst_case"):
        for k, (r, m) in enumerate(zip(reference["worst_case"], measured["worst_case"])):
            rows.append({"what": "worst-case", "exit": k + 1, "reference": r, "now": m, "delta": m - r,
                         "tolerance": tol, "verdict": "ATTACK WEAKER" if m - r > tol else "ok"})
    return rows


def format_rows(rows: list[dict]) -> list[str]:
    head = f"{'what':<18} {'exit':>4} {'reference':>9} {'now':>7} {'delta':>7} {'tolerance':>9}  verdict"
    out = [head]
    for r in rows:
        out.append(f"{r['what']:<18} {r['exit']:>4} {100 * r['reference']:>9.2f} {100 * r['now']:>7.2f} "
                   f"{100 * r['delta']:>+7.2f} {100 * r['tolerance']:>9.2f}  {r['verdict']}")
    return out


#: The attack gate file's fields: name -> (type, what to write). ``reference`` is needed unless ``--write``.
GATE_FIELDS: dict[str, tuple[type, str]] = {
    "checkpoint": (str, '"smallcnn-adv-smoke.pt" (a file beside the gate file)'),
    "checkpoint_sha256": (str, "the checkpoint's sha256, 64 hex digits"),
    "dataset": (str, '"fashion-mnist"'), "source": (str, '"bundled"'),
    "test_limit": (int, "200"), "threads": (int, "2"),
    "attacks": (list, '[{"name": "pgd", "objective": "average", "steps": 20, "seeds": [0]}]'),
    "reference": (dict, 'what --write records: {"n": 200, "clean": [...], "adversarial": {LABEL: [...]}}'),
}


def check_gate(doc: object, source: str, need_reference: bool = True) -> dict:
    """``doc`` (a parsed attack gate file) has every field with its type; else one line naming the field, the
    file and what to write. Returns ``doc``."""
    from neokd_bench.errors import UsageError

    hint = "see the committed leaderboard/gate/attack-gate.json"
    if not isinstance(doc, dict):
        raise UsageError(f"attack gate file {source}: expected a JSON object of {', '.join(GATE_FIELDS)}, got "
                         f"{type(doc).__name__}; {hint}")
    for key, (kind, example) in GATE_FIELDS.items():
        if key == "reference" and not need_reference and key not in doc:
            continue
        value = doc.get(key)
        if key not in doc or isinstance(value, bool) or not isinstance(value, kind):
            got = "missing" if key not in doc else f"of type {type(value).__name__}"
            raise UsageError(f"attack gate file {source}: field {key} is {got}, expected {kind.__name__}, e.g. "
                             f"{example}; {hint}")
    name = doc["checkpoint"]
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise UsageError(f"attack gate file {source}: field checkpoint {name!r} must be a file name beside the "
                         f"gate file, e.g. smallcnn-adv-smoke.pt")
    for key in ("test_limit", "threads"):
        if not 1 <= doc[key] <= 1_000_000:
            raise UsageError(f"attack gate file {source}: field {key} must be in 1..1000000, got {doc[key]}")
    if not doc["attacks"] or not all(isinstance(a, dict) and isinstance(a.get("name"), str) for a in doc["attacks"]):
        raise UsageError(f"attack gate file {source}: field attacks must be a non-empty list of objects with a "
                         f"name, e.g. {GATE_FIELDS['attacks'][1]}")
    ref = doc.get("reference")
    if ref is not None:
        n, adv = ref.get("n"), ref.get("adversarial")
        ok = (isinstance(n, int) and not isinstance(n, bool) and n >= 1 and isinstance(adv, dict)
              and all(isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                  for x in v) for v in adv.values()))
        if not ok:
            raise UsageError(f"attack gate file {source}: field reference must hold n (a count of at least 1) and "
                             f"adversarial (label -> per-exit accuracies); rerun with --write to record it")
    return doc
