"""One generic registry for models, datasets, attacks and defenses.

Design (after lm-evaluation-harness's ``Registry`` and xarray's plugin discovery):

* an entry maps a name to a *target*: either a callable or a lazy ``"module:attr"`` string that is
  imported only when the entry is first built, so ``import neokd_bench`` stays fast;
* a duplicate name is an error (a silent override would corrupt a benchmark);
* an unknown name raises :class:`~neokd_bench.errors.UsageError` with a "did you mean" suggestion;
* plugins are discovered through the entry-point group ``neokd_bench.<kind>``. The built-ins are
  declared in the same groups in ``pyproject.toml``, so there is one path for both. A plugin that
  fails to load warns and is skipped; in strict mode (``--strict``, or ``NEOKD_STRICT_PLUGINS=1``)
  it is an error.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata as md
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from .errors import UsageError

T = TypeVar("T")

_DIST_NAME = "neokd-bench"


class PluginWarning(UserWarning):
    """A plugin could not be loaded; it is skipped."""


@dataclass
class Entry:
    name: str
    target: Any  # callable or "module:attr"
    source: str = "builtin"  # distribution that declared it, or "decorator"
    _resolved: Any = field(default=None, repr=False)

    def resolve(self) -> Any:
        if self._resolved is None:
            if isinstance(self.target, str):
                mod_name, _, attr = self.target.partition(":")
                if not attr:
                    raise ImportError(f"entry {self.name!r}: target {self.target!r} is not 'module:attr'")
                obj: Any = importlib.import_module(mod_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
                self._resolved = obj
            else:
                self._resolved = self.target
        return self._resolved


def strict_plugins() -> bool:
    return os.environ.get("NEOKD_STRICT_PLUGINS", "") not in ("", "0", "false")


class Registry(Generic[T]):
    """Name -> builder mapping with entry-point discovery."""

    def __init__(self, kind: str, *, singular: str | None = None) -> None:
        self.kind = kind  # "models", "datasets", "attacks", "defenses"
        self.singular = singular or kind.rstrip("s")
        self.group = f"neokd_bench.{kind}"
        self._entries: dict[str, Entry] = {}
        self._discovered = False
        self.broken: dict[str, str] = {}  # name -> error message, for `list`

    # -- registration ---------------------------------------------------------------------------
    def add(self, name: str, target: Any, *, source: str = "decorator") -> None:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"invalid {self.singular} name {name!r}")
        if name in self._entries:
            prev = self._entries[name]
            if prev.target == target or prev.source == source == "builtin":
                return
            raise ValueError(
                f"duplicate {self.singular} name {name!r}: already registered by {prev.source} "
                f"({prev.target!r}); choose another name for {target!r} from {source}"
            )
        self._entries[name] = Entry(name, target, source)

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("mynet")`` registers a builder function or class."""

        def deco(obj: T) -> T:
            self.add(name or getattr(obj, "__name__"), obj, source="decorator")
            return obj

        return deco

    # -- discovery ------------------------------------------------------------------------------
    def discover(self, *, strict: bool | None = None) -> None:
        if self._discovered:
            return
        self._discovered = True
        strict = strict_plugins() if strict is None else strict
        eps = list(md.entry_points(group=self.group))
        own = {(ep.name, ep.value) for ep in eps if _ep_dist(ep) == _DIST_NAME}
        if not own:  # running from a source tree without `pip install -e .`: read pyproject.toml
            for name, value in _pyproject_entry_points(self.group):
                self.add(name, value, source="builtin")
        for ep in eps:
            dist = _ep_dist(ep)
            try:
                self.add(ep.name, ep.value, source="builtin" if dist == _DIST_NAME else dist or "plugin")
            except ValueError as exc:
                if strict:
                    raise
                warnings.warn(str(exc), PluginWarning, stacklevel=2)

    def _fail_plugin(self, name: str, exc: BaseException, strict: bool | None) -> None:
        msg = f"{self.singular} plugin {name!r} failed to load: {type(exc).__name__}: {exc}"
        self.broken[name] = msg
        if strict_plugins() if strict is None else strict:
            raise UsageError(msg + "; fix or uninstall the plugin, or run without --strict")
        warnings.warn(msg, PluginWarning, stacklevel=3)

    # -- lookup ---------------------------------------------------------------------------------
    def names(self, pattern: str = "*") -> list[str]:
        self.discover()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        self.discover()
        return name in self._entries

    def get(self, name: str, *, strict: bool | None = None) -> Any:
        self.discover()
        base = name.split(".", 1)[0] if name not in self._entries else name
        if base not in self._entries:
            hint = difflib.get_close_matches(name, self._entries, n=1)
            did = f"did you mean --{self.singular} {hint[0]}? " if hint else ""
            raise UsageError(
                f"unknown {self.singular} {name!r}; {did}see `neokd-bench list {self.kind}` for all"
            )
        try:
            return self._entries[base].resolve()
        except Exception as exc:  # a broken plugin
            self._fail_plugin(base, exc, strict)
            raise UsageError(f"{self.singular} {base!r} could not be loaded: {exc}") from exc

    def entry(self, name: str) -> Entry:
        self.discover()
        return self._entries[name]

    def resolve_all(self, pattern: str = "*", *, strict: bool | None = None) -> dict[str, Any]:
        """Import every matching entry; broken ones warn (or raise when strict) and are skipped."""
        out = {}
        for n in self.names(pattern):
            try:
                out[n] = self._entries[n].resolve()
            except Exception as exc:
                self._fail_plugin(n, exc, strict)
        return out


def _ep_dist(ep: md.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else None


def _pyproject_entry_points(group: str) -> list[tuple[str, str]]:
    import tomllib

    path = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not path.exists():
        return []
    data = tomllib.loads(path.read_text())
    return list(data.get("project", {}).get("entry-points", {}).get(group, {}).items())


def drop_none(kw: dict[str, Any]) -> dict[str, Any]:
    """Unset options (None) are dropped, so CLI defaults never override a component's defaults."""
    return {k: v for k, v in kw.items() if v is not None}


MODELS: Registry = Registry("models")
DATASETS: Registry = Registry("datasets")
ATTACKS: Registry = Registry("attacks")
DEFENSES: Registry = Registry("defenses")
REGISTRIES: dict[str, Registry] = {r.kind: r for r in (MODELS, DATASETS, ATTACKS, DEFENSES)}
