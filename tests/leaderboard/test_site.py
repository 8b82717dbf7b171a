"""The site builder: no torch, same bytes twice, escaped strings, efficiency columns, reported numbers apart."""

from __future__ import annotations

import copy
import hashlib
import subprocess
import sys
from pathlib import Path

from neokd_bench.leaderboard.site import build

from .conftest import REFERENCE, ROOT, attack_row, write_json
from .hostile import NAME, TEXT_PAYLOADS, hostile_result

NO_TORCH = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("the leaderboard imported torch")
sys.meta_path.insert(0, _Block())
from neokd_bench.cli import main
rc = main(["leaderboard", "build", "--results", sys.argv[1], "--out", sys.argv[2]])
rc |= main(["validate", "--quiet", sys.argv[1]])
runtime = sorted(m for m in sys.modules if m.split(".")[:2] in (["neokd_bench", "models"], ["neokd_bench", "attacks"],
                 ["neokd_bench", "defenses"], ["neokd_bench", "evaluation"], ["neokd_bench", "trainer"]))
assert not runtime, runtime
assert "torch" not in sys.modules
sys.exit(rc)
"""


def test_building_the_board_imports_no_torch(tmp_path):
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(REFERENCE), str(tmp_path / "site")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "site" / "index.html").is_file()


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_same_inputs_give_the_same_bytes(tmp_path):
    build([REFERENCE], tmp_path / "a")
    build([REFERENCE], tmp_path / "b")
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b and any(k.endswith(".svg") for k in a) and "index.html" in a


def test_the_site_is_offline(tmp_path):
    build([REFERENCE], tmp_path / "site")
    for page in (tmp_path / "site").rglob("*.html"):
        text = page.read_text()
        assert "http://" not in text and "https://" not in text and "<script" not in text, page


def test_hostile_strings_are_escaped_in_every_page(one_result, tmp_path):
    write_json(tmp_path / "res" / "evil-s0.json", hostile_result(one_result))
    build([tmp_path / "res"], tmp_path / "site")
    pages = {p.name: p.read_text() for p in (tmp_path / "site").rglob("*.html")}
    everything = "\n".join(pages.values())
    assert "<script" not in everything and "<img src=x" not in everything and "<svg onload" not in everything
    assert "<iframe" not in everything and 'href="javascript:' not in everything
    assert "{{ 7 * 7 }}{% raw %}" in everything  # a template in the data is text, never evaluated
    assert "&lt;img src=x onerror=" in everything
    entry = next(t for n, t in pages.items() if n.startswith("fashion-mnist-smoke"))
    assert entry.count("&lt;script&gt;") >= 5
    for svg in (tmp_path / "site" / "plots").glob("*.svg"):  # figures are shown through <img>, but stay inert
        text = svg.read_text()
        assert "<script" not in text and "<img" not in text and "<iframe" not in text
    assert NAME not in everything and not any(p in everything for p in TEXT_PAYLOADS if "<" in p)


def test_efficiency_columns_show_numbers_or_not_measured(one_result, tmp_path):
    plain = copy.deepcopy(one_result)
    eff = copy.deepcopy(one_result)
    eff["defense"]["name"] = "with-efficiency"
    hist = [0.5, 0.3, 0.2]
    eff["evaluation"]["efficiency"] = {
        "policy": "max-softmax", "budget_index": 10,
        "clean": {"mflops_mean": 3.25, "exit_histogram": hist},
        "slowdown": {"mflops_mean": 7.8, "exit_histogram": hist, "factor": 2.4},
        "pgd:max-average": {"mflops_mean": 4.0, "exit_histogram": hist, "factor": 1.23}}
    write_json(tmp_path / "res" / "plain-s0.json", plain)
    write_json(tmp_path / "res" / "eff-s0.json", eff)
    build([tmp_path / "res"], tmp_path / "site")
    html = (tmp_path / "site" / "index.html").read_text()
    with_eff = attack_row(html, "with-efficiency")
    without = attack_row(html, plain["defense"]["name"])
    assert ">3.25<" in with_eff and ">2.40<" in with_eff and "not measured" not in with_eff
    assert without.count("not measured") == 3 and ">0.00<" not in without


def test_reported_numbers_stand_beside_measured_never_in_a_ranking(tmp_path):
    build([REFERENCE], tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    assert "Table" not in index.split("<main>")[1]  # the rankings hold measured entries only
    cifar10 = next((tmp_path / "site").glob("cifar10-*.html")).read_text()
    assert "46.53 · 47.65 · 50.71" in cifar10 and "not measured" in cifar10  # Table 2(a), NEO-KD


BLOCK_TORCH_IMPORT = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("the board imported torch")
sys.meta_path.insert(0, _Block())
import neokd_bench.contract
import neokd_bench.leaderboard.site
import neokd_bench.leaderboard.validate
assert neokd_bench.contract.THREAT["fashion-mnist"].eps == 0.1
assert "torch" not in sys.modules
print(" ".join(sorted(m for m in sys.modules if m.startswith("neokd_bench"))))
"""


def test_importing_the_board_and_the_contract_with_torch_blocked_works():
    proc = subprocess.run([sys.executable, "-c", BLOCK_TORCH_IMPORT], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(proc.stdout.split())
    # the board reaches the runtime only through the torch-free contract (and the plot helpers it shares)
    assert not loaded & {"neokd_bench.presets", "neokd_bench.trainer", "neokd_bench.evaluation"}, loaded
    assert "neokd_bench.contract" in loaded


def test_no_defense_is_special_cased_by_name():
    import neokd_bench.leaderboard.aggregate as aggregate

    source = Path(aggregate.__file__).read_text()
    assert "OURS" not in source and '"neokd"' not in source
