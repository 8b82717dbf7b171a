"""Latency per exit: median of timed calls after warm-up, on a named device."""

from __future__ import annotations

import torch
from neokd_bench.evaluation.latency import latency_section, time_call

from tests.attacks.tiny_models import make_model


def test_latency_section_shape_and_device():
    model = make_model(3)
    model.train()
    lat = latency_section(model, "cpu", batch_sizes=(1, 4), warmup=1, repeats=3)
    assert model.training, "the model's mode is restored"
    assert lat["device"].startswith("cpu: ") and "torch threads" in lat["device"]
    assert lat["statistic"] == "median" and lat["repeats"] == 3 and lat["warmup"] == 1
    assert set(lat["batch_sizes"]) == {"1", "4"}
    for bs, v in lat["batch_sizes"].items():
        assert len(v["per_exit_ms"]) == 3 and all(t > 0 for t in v["per_exit_ms"])
        assert v["per_sample_ms"] == [t / int(bs) for t in v["per_exit_ms"]]


def test_time_call_is_the_median_after_warmup():
    calls = []
    durations = iter([0.0] * 2 + [0.004, 0.001, 0.030])  # 2 warm-up calls, then 3 timed ones

    def fn():
        import time

        calls.append(1)
        time.sleep(next(durations))

    t = time_call(fn, torch.device("cpu"), warmup=2, repeats=3)
    assert len(calls) == 5
    assert 0.004 <= t < 0.030  # the median, not the mean (about .012) nor the slowest
