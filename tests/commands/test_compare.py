"""`neokd-bench compare` reads result files only: it never loads torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "leaderboard" / "results" / "fashion-mnist-smoke"

PROBE = """
import sys
from neokd_bench.cli import main
rc = main(["compare", sys.argv[1], sys.argv[2], "--plot", sys.argv[3]])
from neokd_bench import plots
plots.plot_result(__import__("neokd_bench.results", fromlist=["x"]).load_result(sys.argv[1]), sys.argv[4])
print("rc", rc, "torch" in sys.modules)
"""


def test_compare_and_plots_do_not_import_torch(tmp_path):
    p = subprocess.run([sys.executable, "-c", PROBE, str(RESULTS / "neokd-s0.json"), str(RESULTS / "adv-s0.json"),
                        str(tmp_path / "cmp.png"), str(tmp_path / "one")],
                       capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "rc 0 False", p.stdout[-500:]
    assert (tmp_path / "cmp.png").stat().st_size > 0 and (tmp_path / "one" / "result.budgeted.png").exists()


CPU = RESULTS.parent / "fashion-mnist-cpu"  # measured under the worst-case protocol


def test_the_worst_case_comes_first_and_the_paper_protocol_is_labelled(capsys):
    from neokd_bench.cli import main

    assert main(["compare", str(CPU / "neokd-s0.json"), str(CPU / "adv-s0.json")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "worst case per exit" in out and out.index("worst case per exit") < out.rindex("pgd:max-average (the")
    assert "pgd:average (the paper's protocol)" in out and "not recorded" not in out
    assert "`--curve policy-pgd`: the attacker who knows the exit thresholds" in out


def test_a_file_without_the_worst_case_is_named(capsys, tmp_path):
    import json

    from neokd_bench.cli import main

    old = json.loads((RESULTS / "adv-s0.json").read_text())
    del old["evaluation"]["anytime"]["worst_case"]  # as a result made before the worst case was recorded
    (tmp_path / "adv-s0.json").write_text(json.dumps(old))
    assert main(["compare", str(CPU / "neokd-s0.json"), str(tmp_path / "adv-s0.json")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "worst case: not recorded in adv" in out and "can be optimistic" in out
