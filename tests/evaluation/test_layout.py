"""The evaluation package: one job per module, the public API kept, one progress helper shared with the
trainer, and `run` describing its model through the evaluation's describe_model."""

from __future__ import annotations

import importlib
import inspect

import pytest


@pytest.mark.parametrize("name, module", [
    ("evaluate", "pipeline"), ("dataset_tensors", "pipeline"), ("default_attacks", "attacks"),
    ("parse_attack_list", "options"), ("METRICS", "options"), ("THRESHOLDS_ON", "options"),
    ("describe_model", "describe"), ("anytime_table", "table"),
])
def test_public_api_is_kept_and_each_name_lives_in_its_module(name, module):
    import neokd_bench.evaluation as ev

    assert getattr(ev, name) is getattr(importlib.import_module(f"neokd_bench.evaluation.{module}"), name)
    assert name in ev.__all__


def test_trainer_and_evaluation_share_one_progress_helper():
    from neokd_bench import progress, trainer
    from neokd_bench.evaluation import pipeline

    assert trainer.Progress is pipeline.Progress is progress.Progress
    assert not hasattr(trainer, "_Progress")


def test_progress_draws_on_stderr_or_not_at_all(capsys):
    from neokd_bench.progress import Progress

    with Progress(False) as p:
        p.task("quiet", 3)(1, stats="x")
    assert capsys.readouterr() == ("", "")
    with Progress(True) as p:
        advance = p.task("epoch 1/1", 2)
        advance(1, stats="loss=0.5")
        advance(1)
    out = capsys.readouterr()
    assert out.out == "" and "epoch 1/1" in out.err


def test_run_does_not_describe_the_model_itself():
    from neokd_bench.commands import run

    src = inspect.getsource(run)
    assert "describe_model" in src and "exit_flops" not in src and "count_params" not in src
