"""The generic registry: duplicates, "did you mean", lazy targets, entry-point plugins."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import neokd_bench as nb
import pytest
from neokd_bench.builtins import builtin_targets
from neokd_bench.errors import UsageError
from neokd_bench.registry import REGISTRIES, PluginWarning, Registry


def test_duplicate_name_is_an_error():
    reg = Registry("things")
    reg.add("a", "math:sqrt", source="pkg1")
    with pytest.raises(ValueError, match="duplicate thing name 'a'"):
        reg.add("a", "math:floor", source="pkg2")


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UsageError, match="did you mean --defense neokd"):
        nb.create_defense("neokdd")
    with pytest.raises(UsageError, match="did you mean --model smallcnn"):
        nb.create_model("smalcnn")


def test_lazy_target_is_imported_only_when_built():
    reg = Registry("things")
    reg.add("lazy", "json.decoder:JSONDecoder")
    entry = reg.entry("lazy")
    assert entry._resolved is None
    import json.decoder

    assert reg.get("lazy") is json.decoder.JSONDecoder


def test_broken_plugin_warns_and_strict_raises(monkeypatch):
    reg = Registry("things")
    reg._discovered = True
    reg.add("broken", "no_such_module_xyz:thing", source="someplugin")
    monkeypatch.delenv("NEOKD_STRICT_PLUGINS", raising=False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert reg.resolve_all() == {}
    assert any(issubclass(w.category, PluginWarning) for w in rec)
    with pytest.raises(UsageError, match="failed to load"):
        reg.resolve_all(strict=True)


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_builtin_resolves(kind):
    """Every entry resolves and is of its registry's kind; the built-ins are exactly the table of
    bench/builtins.py (the others come from the test-only distribution in tests/plugin_dist)."""
    reg = REGISTRIES[kind]
    names = reg.names()
    assert names, f"no {kind} registered"
    resolved = reg.resolve_all(strict=True)
    assert sorted(resolved) == names
    declared = set(builtin_targets(kind))
    assert {n for n in names if reg.entry(n).source == "builtin"} == declared
    assert all(reg.entry(n).source in ("builtin", "neokd-test-plugins") for n in names)


def test_builtins_are_declared_once_and_pyproject_declares_none(monkeypatch):
    """One source of truth: pyproject.toml declares no entry point of the package's own (only plugins use the
    groups), and the built-ins need no installed metadata: with no entry point at all, every one is listed."""
    import importlib.metadata as md

    import tomllib

    root = Path(__file__).resolve().parents[1]
    assert "entry-points" not in tomllib.loads((root / "pyproject.toml").read_text())["project"]
    monkeypatch.setattr(md, "entry_points", lambda **kw: [])
    for kind in sorted(REGISTRIES):
        fresh = Registry(kind)
        assert fresh.names() == sorted(builtin_targets(kind)) != []
        assert {fresh.entry(n).target for n in fresh.names()} == set(builtin_targets(kind).values())


def test_list_filters_by_pattern():
    assert nb.list_models("msdnet*") and all(n.startswith("msdnet") for n in nb.list_models("msdnet*"))
    assert "smallcnn" not in nb.list_models("msdnet*")


# -- a third-party plugin exposed through entry points (a fixture, not a published package) ----------
PLUGIN = textwrap.dedent('''
    """A third-party plugin for the registry tests."""
    import torch
    from torch import nn
    from neokd_bench.models.base import MultiExitModel


    class TwoExitMLP(MultiExitModel):
        """A 2-exit MLP from a plugin."""

        def __init__(self, num_classes=10, mean=None, std=None):
            super().__init__(num_exits=2, num_classes=num_classes, input_size=(1, 28, 28),
                             mean=mean or [0.0], std=std or [1.0])
            self.b1 = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU())
            self.b2 = nn.Sequential(nn.Linear(32, 32), nn.ReLU())
            self.h1, self.h2 = nn.Linear(32, num_classes), nn.Linear(32, num_classes)

        def forward_exits(self, x, upto):
            h = self.b1(x)
            outs = [self.h1(h)]
            if upto >= 1:
                outs.append(self.h2(self.b2(h)))
            return outs


    def two_exit_mlp(**kw):
        """A 2-exit MLP from a plugin."""
        return TwoExitMLP(**kw)
''')


@pytest.fixture()
def plugin_path(tmp_path: Path) -> Path:
    (tmp_path / "neokd_plugin_demo.py").write_text(PLUGIN)
    dist = tmp_path / "neokd_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: neokd-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[neokd_bench.models]\ntwo-exit-mlp = neokd_plugin_demo:two_exit_mlp\n"
        "[neokd_bench.defenses]\nbroken-demo = neokd_plugin_demo:does_not_exist\n"
        "wrong-kind-demo = neokd_plugin_demo:TwoExitMLP\n")
    return tmp_path


def test_an_entry_point_of_the_wrong_kind_is_refused(plugin_path, monkeypatch):
    """A defense entry point that names a model class is refused when it loads, in one line."""
    monkeypatch.syspath_prepend(str(plugin_path))
    reg = Registry("defenses", base_cls="neokd_bench.defenses.base:Defense")
    assert "wrong-kind-demo" in reg.names()
    with pytest.raises(UsageError) as info:
        reg.get("wrong-kind-demo", strict=True)
    assert "TwoExitMLP is not a Defense subclass" in _one_line(info)


def test_plugin_is_listed_and_built(plugin_path, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_path))
    reg = Registry("models")
    assert "two-exit-mlp" in reg.names()
    assert reg.entry("two-exit-mlp").source == "neokd-plugin-demo"
    import torch

    model = reg.get("two-exit-mlp")()
    outs = model(torch.rand(2, 1, 28, 28))
    assert len(outs) == model.num_exits == 2


def test_plugin_through_cli_and_create_model(plugin_path):
    env_pp = f"{plugin_path}"
    code = ("import neokd_bench as nb, torch; m = nb.create_model('two-exit-mlp', num_classes=3);"
            "print(len(m(torch.rand(1,1,28,28))), m(torch.rand(1,1,28,28))[0].shape[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(PYTHONPATH=env_pp), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "3"]
    listed = subprocess.run([sys.executable, "-m", "neokd_bench.cli", "list", "models", "--no-flops"],
                            capture_output=True, text=True, env=_env(PYTHONPATH=env_pp, COLUMNS="200"),
                            timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert "two-exit-mlp" in listed.stdout
    # the broken defense plugin warns, and --strict makes it an error (exit 2, one line)
    strict = subprocess.run([sys.executable, "-m", "neokd_bench.cli", "--strict", "list", "defenses"],
                            capture_output=True, text=True, env=_env(PYTHONPATH=env_pp), timeout=300)
    assert strict.returncode == 2
    assert "broken-demo" in strict.stderr and "Traceback" not in strict.stderr


def _env(**kw: str) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(kw)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


# -- name.tag: a tag is a declared preset, never dropped ---------------------------
def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("create,name,hint", [
    (nb.create_defense, "neokd.pape", "did you mean neokd.paper? known tags: paper"),
    (nb.create_defense, "nkd.smoke", "known tags: paper"),
    (nb.create_attack, "pgd.tiyn", "did you mean pgd.tiny? known tags: paper, tiny"),
    (nb.create_model, "smallcnn.paper", "it has no tags"),
])
def test_unknown_tag_is_a_one_line_error_listing_the_known_tags(create, name, hint):
    with pytest.raises(UsageError) as info:
        create(name)
    msg = _one_line(info)
    assert f"unknown tag {name.split('.')[1]!r}" in msg and hint in msg


def test_a_known_tag_applies_its_overrides_under_the_users():
    assert nb.create_attack("pgd.tiny").config.steps == nb.create_attack("pgd").presets["tiny"]["steps"]
    assert nb.create_attack("pgd.tiny", steps=5).config.steps == 5
    assert nb.create_attack("pgd.paper").config == nb.create_attack("pgd").config
    assert nb.create_defense("neokd.paper").config == nb.create_defense("neokd").config


@pytest.mark.parametrize("name", ["neokd.paper.smoke", "adv./../../../escaped", "adv/escaped", "../adv",
                                  "adv.", ".paper", "ad v", "adv:paper", "adv\\x", ""])
def test_malformed_names_are_one_line_errors(name):
    with pytest.raises(UsageError) as info:
        nb.create_defense(name)
    assert "NAME or NAME.TAG" in _one_line(info)


def test_a_registered_name_cannot_contain_a_dot_or_path_characters():
    reg = Registry("things")
    for bad in ("a.b", "a/b", "../a", "a b"):
        with pytest.raises(ValueError, match="invalid thing name"):
            reg.add(bad, "math:sqrt")


# -- base_cls: a plugin of the wrong kind is refused when it loads (item 12) -------------------------
@pytest.mark.parametrize("target,why", [("collections:OrderedDict", "is not a Defense subclass"),
                                        ("math:pi", "float object is not callable")])
def test_a_plugin_of_the_wrong_kind_is_refused_at_load(monkeypatch, target, why):
    monkeypatch.delenv("NEOKD_STRICT_PLUGINS", raising=False)
    reg = Registry("defenses", base_cls="neokd_bench.defenses.base:Defense")
    reg._discovered = True
    reg.add("wrong-kind", target, source="someplugin")
    reg.add("adv", "neokd_bench.defenses.adv:Adv", source="builtin")
    with pytest.warns(PluginWarning, match=why):
        assert list(reg.resolve_all()) == ["adv"]  # listed as broken, the rest still loads
    assert why in reg.broken["wrong-kind"]
    with pytest.raises(UsageError) as info:
        reg.get("wrong-kind", strict=True)
    assert why in _one_line(info)


def test_a_builder_function_is_checked_on_what_it_builds():
    import torch

    reg = Registry("models", base_cls="neokd_bench.models.base:MultiExitModel")
    reg._discovered = True
    reg.add("linear", lambda **kw: torch.nn.Linear(2, 2))
    with pytest.raises(UsageError) as info:
        reg.build("linear", {})
    assert "built a Linear, not a MultiExitModel" in _one_line(info)
