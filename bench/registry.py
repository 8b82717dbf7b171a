"""One generic registry for models, datasets, attacks and defenses.

Design (after lm-evaluation-harness's ``Registry`` and xarray's plugin discovery):

* an entry maps a name to a *target*: either a callable or a lazy ``"module:attr"`` string that is
  imported only when the entry is first built, so ``import neokd_bench`` stays fast;
* a duplicate name is an error (a silent override would corrupt a benchmark);
* an unknown name raises :class:`~neokd_bench.errors.UsageError` with a "did you mean" suggestion;
* a name may carry a tag, ``name.tag`` (timm style, e.g. ``neokd.paper``, ``pgd.tiny``): a named preset of
  config overrides that the entry declares in its ``presets`` mapping (``{"paper": {}, "tiny": {...}}``).
  An unknown tag, a second dot or any character other than letters, digits, ``-`` and ``_`` is a
  one-line error that lists the known tags; a tag is never dropped;
* ``base_cls``: what an entry must build (``Defense``, ``Attack``, ``MultiExitModel``, ...). A class
  entry of another kind, or an entry that is not callable, is refused when it loads; a builder function
  is checked on what it returns;
* one registration path: the built-ins come from one table, ``bench/builtins.py`` (the ablation variants
  add their rows from ``defenses/variants.py``), plugins from the entry-point group ``neokd_bench.<kind>``
  of any installed distribution; both are a name and a lazy target added through :meth:`Registry.add`,
  with the same checks. Nothing parses ``pyproject.toml`` at run time. A plugin that fails to load warns
  and is skipped; in strict mode (``--strict``, or ``NEOKD_STRICT_PLUGINS=1``) it is an error.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata as md
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import UsageError

T = TypeVar("T")

_DIST_NAME = "neokd-bench"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_SPEC = re.compile(r"(?P<base>[A-Za-z0-9][A-Za-z0-9_-]*)(?:\.(?P<tag>[A-Za-z0-9][A-Za-z0-9_-]*))?")


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
            self._resolved = import_target(self.target) if isinstance(self.target, str) else self.target
        return self._resolved


def import_target(target: str) -> Any:
    """The object a lazy ``"module:attr"`` target names (``attr`` may be dotted)."""
    mod_name, _, attr = target.partition(":")
    if not attr:
        raise ImportError(f"target {target!r} is not 'module:attr'")
    obj: Any = importlib.import_module(mod_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def strict_plugins() -> bool:
    return os.environ.get("NEOKD_STRICT_PLUGINS", "") not in ("", "0", "false")


class Registry(Generic[T]):
    """Name -> builder mapping with entry-point discovery."""

    def __init__(self, kind: str, *, singular: str | None = None, base_cls: Any = None) -> None:
        self.kind = kind  # "models", "datasets", "attacks", "defenses"
        self.singular = singular or kind.rstrip("s")
        self._base_cls = base_cls  # a class, a lazy "module:attr" string, or None (anything callable)
        self.group = f"neokd_bench.{kind}"
        self._entries: dict[str, Entry] = {}
        self._discovered = False
        self.broken: dict[str, str] = {}  # name -> error message, for `list`

    # -- registration ---------------------------------------------------------------------------
    def add(self, name: str, target: Any, *, source: str = "decorator") -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"invalid {self.singular} name {name!r}: use letters, digits, - and _ "
                             "(a '.' would start a tag)")
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
            self.add(name or obj.__name__, obj, source="decorator")
            return obj

        return deco

    # -- discovery ------------------------------------------------------------------------------
    def discover(self, *, strict: bool | None = None) -> None:
        if self._discovered:
            return
        self._discovered = True
        strict = strict_plugins() if strict is None else strict
        from .builtins import builtin_targets

        for name, value in builtin_targets(self.kind).items():
            self.add(name, value, source="builtin")
        for ep in md.entry_points(group=self.group):
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

    @property
    def base_cls(self) -> type | None:
        if isinstance(self._base_cls, str):
            self._base_cls = import_target(self._base_cls)
        return self._base_cls

    def split(self, name: str) -> tuple[str, str | None]:
        """``"neokd.paper"`` -> ``("neokd", "paper")``; ``"neokd"`` -> ``("neokd", None)``. Anything else
        (two dots, a path character, a space) is a one-line :class:`UsageError`."""
        m = _SPEC.fullmatch(name) if isinstance(name, str) else None
        if m is None:
            raise UsageError(f"{self.singular} name {name!r} is not valid; write NAME or NAME.TAG with letters, "
                             f"digits, - and _ only, e.g. --{self.singular} {self._example()}")
        return m["base"], m["tag"]

    def _example(self) -> str:
        return next(iter(sorted(self._entries)), "NAME")

    def get(self, name: str, *, strict: bool | None = None) -> Any:
        """The builder of ``name`` (a tag, if any, is checked against the entry's presets)."""
        self.discover()
        base, tag = self.split(name)
        if base not in self._entries:
            hint = difflib.get_close_matches(base, self._entries, n=1)
            did = f"did you mean --{self.singular} {hint[0]}? " if hint else ""
            raise UsageError(
                f"unknown {self.singular} {name!r}; {did}see `neokd-bench list {self.kind}` for all"
            )
        try:
            obj = self._load(base)
        except Exception as exc:  # a broken plugin, or one of the wrong kind
            self._fail_plugin(base, exc, strict)
            raise UsageError(f"{self.singular} {base!r} could not be loaded: {exc}") from exc
        if tag is not None:
            self._preset(base, obj, tag)
        return obj

    def presets(self, name: str) -> dict[str, dict[str, Any]]:
        """The tags ``name`` declares (``{tag: config overrides}``); empty when it declares none."""
        presets = getattr(self.get(name), "presets", None) or {}
        return {str(k): dict(v) for k, v in presets.items()}

    def _preset(self, base: str, obj: Any, tag: str) -> dict[str, Any]:
        presets = getattr(obj, "presets", None) or {}
        if tag not in presets:
            known = sorted(presets)
            hint = difflib.get_close_matches(tag, known, n=1)
            did = f"did you mean {base}.{hint[0]}? " if hint else ""
            have = f"known tags: {', '.join(known)}" if known else "it has no tags; write it without one"
            raise UsageError(f"unknown tag {tag!r} for {self.singular} {base!r}; {did}{have}")
        return dict(presets[tag])

    def build(self, name: str, kw: dict[str, Any]) -> Any:
        """Build ``name`` (``name.tag``: the tag's overrides, then ``kw``; unset (None) options dropped)."""
        builder = self.get(name)
        base, tag = self.split(name)
        overrides = self._preset(base, builder, tag) if tag is not None else {}
        try:
            obj = builder(**{**overrides, **drop_none(kw)})
        except TypeError as exc:
            if "unexpected keyword" in str(exc) or "got an unexpected" in str(exc):
                raise UsageError(f"{self.singular} {name!r}: {exc}; see `neokd-bench list {self.kind}`") from exc
            raise
        cls = self.base_cls
        if cls is not None and not isinstance(obj, cls):
            raise UsageError(f"{self.singular} {base!r} built a {type(obj).__name__}, not a {cls.__name__}; "
                             f"its entry point must build a {cls.__name__}")
        return obj

    def _load(self, name: str) -> Any:
        """Import the entry and check that it is of this registry's kind."""
        obj = self._entries[name].resolve()
        cls = self.base_cls
        if cls is None:
            return obj
        built = getattr(obj, "builds", obj)  # a named preset (defenses.variants.Variant) builds its base
        if isinstance(built, type):
            if not issubclass(built, cls):
                raise TypeError(f"{built.__module__}.{built.__qualname__} is not a {cls.__name__} subclass; "
                                f"point the entry point at a {cls.__name__} subclass or a function that builds one")
        elif not callable(obj):
            raise TypeError(f"{type(obj).__name__} object is not callable; point the entry point at a "
                            f"{cls.__name__} subclass or a function that builds one")
        return obj

    def entry(self, name: str) -> Entry:
        self.discover()
        return self._entries[name]

    def resolve_all(self, pattern: str = "*", *, strict: bool | None = None) -> dict[str, Any]:
        """Import every matching entry; broken ones warn (or raise when strict) and are skipped."""
        out = {}
        for n in self.names(pattern):
            try:
                out[n] = self._load(n)
            except Exception as exc:
                self._fail_plugin(n, exc, strict)
        return out


def _ep_dist(ep: md.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else None


def drop_none(kw: dict[str, Any]) -> dict[str, Any]:
    """Unset options (None) are dropped, so CLI defaults never override a component's defaults."""
    return {k: v for k, v in kw.items() if v is not None}


MODELS: Registry = Registry("models", base_cls="neokd_bench.models.base:MultiExitModel")
DATASETS: Registry = Registry("datasets", base_cls="neokd_bench.data.base:DatasetBundle")
ATTACKS: Registry = Registry("attacks", base_cls="neokd_bench.attacks.base:Attack")
DEFENSES: Registry = Registry("defenses", base_cls="neokd_bench.defenses.base:Defense")
#: Exit policies of budgeted prediction (``neokd_bench.evaluation.policies``).
POLICIES: Registry = Registry("policies", singular="policy", base_cls="neokd_bench.evaluation.policies:ExitPolicy")
REGISTRIES: dict[str, Registry] = {r.kind: r for r in (MODELS, DATASETS, ATTACKS, DEFENSES, POLICIES)}
