"""What the runtime and the board share, with no torch: names, the threat model, the result-file helpers.

The leaderboard (``neokd_bench.leaderboard``) is a pure layer: it reads result files and writes a site, and
imports nothing that loads torch, a model, a defense or an attack. Whatever it needs from the runtime comes from
this module, and the runtime takes the same definitions from here, so the two cannot drift apart:

* :data:`NAME_GRAMMAR` / :func:`name_problem` - the grammar of defense, model and dataset names in result files:
  lowercase letters, digits, ``-``, ``_`` and ``.``, starting with a letter or a digit, at most
  :data:`NAME_MAX` characters (no markup, no path, no mathtext can hide in a name);
* :class:`Threat` and :data:`THREAT` - the L-inf threat model per dataset (eps and PGD step size, with the
  source of each; :mod:`neokd_bench.presets` re-exports them);
* the result-file helpers the board uses: :func:`validate_result`, :class:`ResultValidationError`,
  :data:`PATH_FIELDS` and :func:`atomic_write` (UTF-8, temp file + ``os.replace``), from
  :mod:`neokd_bench.results` (stdlib + jsonschema only);
* :func:`registered_names` - the names of a registry (entry points only; no component is imported).

Importing this module imports no torch (a test blocks torch and imports the board).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .results import PATH_FIELDS, SUPPORTED_SCHEMA_VERSIONS, ResultValidationError, atomic_write, validate_result

__all__ = ["NAME_GRAMMAR", "NAME_MAX", "NAMED_FIELDS", "PATH_FIELDS", "SUPPORTED_SCHEMA_VERSIONS", "THREAT",
           "ResultValidationError", "Threat", "atomic_write", "name_problem", "registered_names",
           "validate_result"]

#: Names of defenses, models and datasets (the registry's grammar, lowercase).
NAME_GRAMMAR = re.compile(r"[a-z0-9][a-z0-9._-]*")
NAME_MAX = 64
#: The name fields of a result file that must follow :data:`NAME_GRAMMAR`.
NAMED_FIELDS = (("defense", "name"), ("model", "name"), ("dataset", "name"))


def name_problem(field: str, value: object) -> str | None:
    """One line saying what is wrong with a name and what to use instead; None for a good name."""
    if isinstance(value, str) and len(value) <= NAME_MAX and NAME_GRAMMAR.fullmatch(value):
        return None
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return (f"result field {field}: {shown} is not a registry name; use lowercase letters, digits, '-', '_' and "
            f"'.', starting with a letter or digit, at most {NAME_MAX} characters (e.g. 'my-defense')")


@dataclass(frozen=True)
class Threat:
    eps: float
    step_size: float
    source: str


THREAT: dict[str, Threat] = {
    "mnist": Threat(0.3, 20 / 255, "paper Sec. 4.1 / App. A.2"),
    # Not in the paper: eps 0.1 and step 0.025 (docs/design.md, Fashion-MNIST column).
    "fashion-mnist": Threat(0.1, 0.025, "docs/design.md (Fashion-MNIST is not in the paper)"),
    "cifar10": Threat(8 / 255, 2 / 255, "paper App. A.2"),
    "cifar100": Threat(8 / 255, 2 / 255, "paper App. A.2"),
    "tiny-imagenet": Threat(2 / 255, (2 / 3) * (2 / 255), "paper App. A.2 (step = 2/3 eps)"),
    "imagenet": Threat(2 / 255, (2 / 3) * (2 / 255), "paper App. A.2 (step = 2/3 eps)"),
}


def registered_names(kind: str) -> list[str]:
    """The registered names of ``kind`` (``attacks``, ``datasets``, ``defenses``, ``models``); reads the
    entry points and imports no component (so no torch)."""
    from . import registry

    return list(getattr(registry, kind.upper()).names())
