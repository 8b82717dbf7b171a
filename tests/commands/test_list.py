"""`neokd-bench list`: the exit policies are listed with the other registries."""

from __future__ import annotations

import pytest
from neokd_bench.cli import main

POLICIES = ("max-softmax", "entropy", "patience")


@pytest.mark.parametrize("argv", [["list", "policies"], ["list", "--pattern", "*", "--no-flops", "policies"]])
def test_list_policies(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "policies (neokd_bench.policies)" in out
    assert all(name in out for name in POLICIES), out


def test_plain_list_includes_the_policies(capsys):
    # the pattern matches the policy only, so no model is built
    assert main(["list", "--pattern", "patience", "--no-flops"]) == 0
    out = capsys.readouterr().out
    for kind in ("models", "datasets", "attacks", "defenses", "policies"):
        assert f"{kind} (neokd_bench.{kind})" in out, out
    assert "patience" in out and "max-softmax" not in out
