"""Kill and resume: SIGKILLs at random moments and during checkpoint writes; every
resumed run ends with the uninterrupted run's weights and leaves no temporary file. The full figure (20
kills) comes from ``scripts/kill_resume.py``; this runs the same function with 4 kills (about 2 minutes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "kill_resume.py"


@pytest.mark.slow
def test_sigkill_and_resume_give_the_uninterrupted_weights_and_no_temp_file(tmp_path):
    spec = importlib.util.spec_from_file_location("kill_resume", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    counts = mod.kill_and_resume(tmp_path, kills=4, kills_per_trial=2, seed=1, log=lambda line: None)
    assert counts["kills"] == 4 and counts["during_write"] >= 1
    assert counts["failures"] == 0, counts
