"""The paper's 12 ablation and teacher-exit variants are one table of named presets of their base defense
(defenses/variants.py): each name still works everywhere, builds its base with its overrides, has exactly
its base's loss, and says what it is in the result file."""

from __future__ import annotations

import json
from pathlib import Path

import neokd_bench as nb
import pytest
import torch
from neokd_bench.builtins import builtin_targets
from neokd_bench.cli import main
from neokd_bench.defenses.variants import VARIANTS, Variant
from neokd_bench.registry import DEFENSES
from neokd_bench.results import ResultValidationError, validate_result

ROOT = Path(__file__).resolve().parents[2]
NAMES = [v.name for v in VARIANTS]
PAPER_ROWS = {"nkd", "eokd", "nkd-no-ensemble", "nkd-ensemble-all", "skd-exit0", "skd-exit1", "skd-exit2",
              "skd-ensemble", "ard-exit0", "ard-exit1", "ard-exit2", "ard-ensemble"}


def test_the_table_holds_the_papers_rows_and_the_builtin_table_registers_each():
    assert set(NAMES) == PAPER_ROWS and len(NAMES) == len(PAPER_ROWS)
    group = builtin_targets("defenses")
    for v in VARIANTS:
        assert group[v.name] == f"neokd_bench.defenses.variants:{v.name.replace('-', '_')}"
        assert DEFENSES.get(v.name) is v and DEFENSES.entry(v.name).source == "builtin"
    assert {n for n, target in group.items() if ":" in target and target.split(":")[0].endswith(".variants")} \
        == PAPER_ROWS


@pytest.fixture(scope="module")
def batch(fmnist):
    xs, ys = zip(*(fmnist.train[i] for i in range(8)))
    x, y = torch.stack(xs), torch.tensor(ys)
    torch.manual_seed(0)
    model = nb.create_model("smallcnn").eval()  # eval: dropout off, so two passes agree
    x_adv = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
    return model, x, x_adv, y


def _ready(d):
    d.setup(dataset="fashion-mnist", num_exits=3, num_classes=10, seed=0)
    d.start_epoch(0)
    return d


@pytest.mark.parametrize("variant", VARIANTS, ids=NAMES)
def test_variant_is_its_base_with_its_overrides(variant, batch):
    d = _ready(nb.create_defense(variant.name))
    ref = _ready(nb.create_defense(variant.base, **variant.overrides))
    assert type(d) is type(ref) and d.config == ref.config
    for key, value in variant.overrides.items():
        assert getattr(d.config, key) == value
    assert d.config != _ready(nb.create_defense(variant.base)).config, "the overrides change nothing"
    model, x, xa, y = batch
    loss, parts = d.loss(model, x, xa, y)
    ref_loss, ref_parts = ref.loss(model, x, xa, y)
    assert torch.equal(loss, ref_loss)
    assert parts.keys() == ref_parts.keys() and all(torch.equal(parts[k], ref_parts[k]) for k in parts)


@pytest.mark.parametrize("variant", VARIANTS, ids=NAMES)
def test_describe_records_variant_base_and_overrides(variant):
    desc = json.loads(json.dumps(nb.create_defense(variant.name).describe()))
    assert desc["name"] == variant.name
    assert desc["variant"] == {"base": variant.base, "overrides": variant.overrides, "source": variant.source}
    assert variant.source in desc["source"]
    assert "variant" not in nb.create_defense(variant.base).describe()


def test_user_options_apply_on_top_and_errors_name_the_variant():
    d = nb.create_defense("nkd", alpha=2)
    assert (d.config.alpha, d.config.beta) == (2.0, 0.0)
    with pytest.raises(nb.UsageError, match="defense 'skd-exit1': weight="):
        nb.create_defense("skd-exit1", weight="heavy")


def test_a_new_variant_is_one_line():
    row = Variant("neokd-alpha1", "neokd", {"alpha": 1.0}, "a test row")
    d = row()
    assert d.name == "neokd-alpha1" and d.config.alpha == 1.0 and d.describe()["variant"]["base"] == "neokd"


def test_variants_are_listed(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["list", "defenses"]) == 0
    out = capsys.readouterr().out
    for v in VARIANTS:
        assert v.name in out


def test_a_variant_runs_from_the_cli_and_its_result_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--defense", "nkd", "--dataset", "fashion-mnist", "--preset", "smoke", "--epochs", "1",
               "--train-limit", "32", "--batch-size", "32", "--set", "steps=1", "--no-eval", "--quiet",
               "--device", "cpu", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    saved = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["defense"]
    assert saved["name"] == "nkd" and saved["variant"]["base"] == "neokd"
    assert saved["variant"]["overrides"] == {"beta": 0.0} and saved["config"]["beta"] == 0.0
    # the result file written from that description validates against the schema
    result = json.loads((ROOT / "leaderboard/results/fashion-mnist-smoke/neokd-s0.json").read_text())
    result["defense"] = saved
    validate_result(result)
    result["defense"] = {**saved, "variant": {"overrides": {"beta": 0.0}}}  # the schema requires the base
    with pytest.raises(ResultValidationError, match="base"):
        validate_result(result)
