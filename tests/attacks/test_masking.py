"""Gradient-masking checks: they pass on an honest model, FAIL on a model that masks its gradients, and the
`neokd-bench masking` command prints them and sets its exit code."""

from __future__ import annotations

import json

import pytest
import torch
from neokd_bench.attacks.masking import run_masking_checks, zero_gradient_fraction
from neokd_bench.cli import main
from .tiny_models import TinyExits, make_batch, make_model

FAST = {"eps": 0.05, "step_size": 0.02, "steps": 5, "square_queries": 60, "seed": 0}
CHECKS = {"eps_monotone", "large_eps", "more_steps", "black_box", "nonzero_gradients"}


class Quantized(TinyExits):
    """Input quantization with a zero gradient: the textbook case of masked (shattered) gradients."""

    def forward(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        return super().forward(torch.round(x * 4) / 4, upto)


def test_honest_model_passes_the_gradient_checks() -> None:
    model = make_model(3, seed=1)
    x, y = make_batch(model, 40, seed=2)
    report = run_masking_checks(model, x, y, **FAST)
    assert set(report["checks"]) == CHECKS
    json.dumps(report)
    c = report["checks"]
    assert c["nonzero_gradients"]["passed"] and c["nonzero_gradients"]["zero_fraction"] == [0.0, 0.0, 0.0]
    assert c["large_eps"]["passed"], c["large_eps"]
    assert c["black_box"]["passed"], c["black_box"]
    assert len(c["eps_monotone"]["accuracy"]) == 4 and all(len(a) == 3 for a in c["eps_monotone"]["accuracy"])


def test_masked_gradients_fail() -> None:
    torch.manual_seed(1)
    model = Quantized(3)
    model.eval()
    x, y = make_batch(model, 40, seed=2)
    assert zero_gradient_fraction(model, x, y) == [1.0, 1.0, 1.0]
    report = run_masking_checks(model, x, y, **FAST)
    assert not report["passed"]
    assert not report["checks"]["nonzero_gradients"]["passed"]
    assert not report["checks"]["black_box"]["passed"]  # Square beats the blinded PGD


def test_cli_missing_checkpoint_is_usage_error(tmp_path, capsys) -> None:
    assert main(["masking", str(tmp_path / "nope.pt")]) == 2
    assert "checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_on_a_trained_checkpoint(trained_checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "masking.json"
    rc = main(["masking", str(trained_checkpoint), "--n", "24", "--steps", "3", "--square-queries", "30",
               "--device", "cpu", "--json", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert rc == (0 if report["passed"] else 1)
    assert "gradient-masking checks" in printed and "black-box" in printed
    assert set(report["checks"]) == CHECKS and report["config"]["n"] == 24
