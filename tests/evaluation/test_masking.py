"""Gradient-masking checks: they pass on an honest model, FAIL on a model that masks its gradients, and the
`neokd-bench masking` command prints them and sets its exit code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from neokd_bench.cli import main
from neokd_bench.evaluation.masking import run_masking_checks, zero_gradient_fraction

from ..attacks.conftest import _one_thread  # noqa: F401  (autouse: one intra-op thread for the tiny models)
from ..attacks.tiny_models import TinyExits, make_batch, make_model

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


class QuantizedStubbornLast(Quantized):
    """Masked gradients, and a last exit that always predicts class 0: no sample is ever fooled at every exit."""

    def forward_exits(self, x: torch.Tensor, upto: int) -> list[torch.Tensor]:
        outs = super().forward_exits(x, upto)
        if upto == self.num_exits - 1:
            constant = 10.0 * torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), self.num_classes)
            outs[-1] = 0 * outs[-1] + constant
        return outs


def test_black_box_check_compares_both_attacks_under_one_rule() -> None:
    """Square fools the early exits of a masked model but never the last one. Under the clean-x rule its
    accuracy would be the clean accuracy and the black-box check would pass; under the rule PGD follows (its
    own iterate) Square beats the blinded PGD and the check fails, as it should."""
    torch.manual_seed(1)
    model = QuantizedStubbornLast(3).eval()
    xs = torch.rand(600, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        x = xs[model(xs)[0].argmax(1) == 0][:40]
    y = torch.zeros(len(x), dtype=torch.long)
    assert len(x) == 40
    report = run_masking_checks(model, x, y, eps=0.05, step_size=0.0125, steps=5, square_queries=100, seed=0)
    box = report["checks"]["black_box"]
    assert report["config"]["not_fooled"] == "best"
    assert not box["passed"], box
    assert box["square_accuracy"][0] < box["pgd_accuracy"][0] - 0.25
    # The clean-x rule, for both, hides it: Square then scores the clean accuracy at every exit.
    clean = run_masking_checks(model, x, y, eps=0.05, step_size=0.0125, steps=5, square_queries=100, seed=0,
                               not_fooled="clean")["checks"]["black_box"]
    assert clean["square_accuracy"][0] == 1.0


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


def test_paired_black_box_tolerates_noise_and_flags_a_large_lead() -> None:
    """Only discordant samples count: Square alone fooling 3 against PGD alone 1 is noise (one-sided exact
    binomial p = 5/16), Square alone fooling 12 against 0 is not (p = 2**-12)."""
    from neokd_bench.evaluation.masking import paired_black_box

    white = np.ones((200, 2), dtype=bool)
    square = white.copy()
    square[:3, 0] = False
    white[3, 0] = False
    square[:12, 1] = False
    res = paired_black_box(square, white)
    assert res["square_only"] == [3, 12] and res["white_only"] == [1, 0]
    assert res["p_value"][0] == pytest.approx(5 / 16) and res["p_value"][1] == pytest.approx(2.0 ** -12)
    assert res["passed_per_exit"] == [True, False] and not res["passed"]
    assert paired_black_box(white, white)["passed"]  # no discordant sample: nothing to flag
