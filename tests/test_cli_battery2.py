"""The second battery of bad inputs: the commands added after the first one (``reproduce``, ``validate``,
``check --attack-gate``, ``leaderboard build``, eval's efficiency options) and every file a user hands them.

As in ``test_cli_battery.py``, every case calls the CLI in-process (``neokd_bench.cli.main``) from an empty
working folder and must end in one of:

* ``ERR``: exit code 2 and exactly one line on stderr, starting with ``error:`` and holding the expected text;
* ``BAD``: ``validate``'s verdict on a file it could open: exit code 1, nothing on stderr, the problem as one
  line on stdout (holding the expected text) and the count line;
* ``OK``: a documented success, exit code 0.

No case may print a traceback, block (a fifo is never opened), or write a file outside its own working folder
(the inputs' folder and the temporary root above them are compared before and after); an ``ERR`` or ``BAD``
case writes nothing at all. No case trains or attacks: each error is found before any work starts.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from neokd_bench.cli import main
from neokd_bench.safe_io import MAX_BYTES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "leaderboard" / "results" / "fashion-mnist-smoke"
GATE = ROOT / "leaderboard" / "gate" / "attack-gate.json"
ERR, BAD, OK = "error", "bad", "ok"
BIG = "1" * 5000  # an integer beyond Python's 4300-digit conversion limit
REPRO = ["reproduce", "cpu", "--preset", "smoke", "--seeds", "0", "--defenses", "adv", "--no-board",
         "--runs-dir", "{tmp}/r"]
SLURM = ["reproduce", "a1", "--executor", "slurm", "--print-sbatch", "--runs-dir", "{tmp}/r"]
EVAL = ["eval", "{tmp}/none.pt", "--quiet"]


def _cases() -> list[tuple[str, str, list[str], str, str]]:
    """(command, id, argv, kind, expected text)."""
    c: list[tuple[str, str, list[str], str, str]] = []

    def add(argv: list[str], kind: str, expect: str = "", name: str | None = None) -> None:
        c.append((argv[0], name or " ".join(argv), argv, kind, expect))

    # -- validate: what cannot be opened is refused before reading; what can is read with bounds ------------
    for target, expect in [
        ("{fifo}", "is a fifo, not a result file"), ("/dev/zero", "is a character device"),
        ("{fifo_dir}", "a.json is a fifo, not a result file"), ("{empty_dir}", "no result files in"),
        ("{summary_only_dir}", "no result files in"), ("{tmp}/none.json", "no result file or folder at"),
    ]:
        add(["validate", target], ERR, expect)
    for target, expect in [
        ("{deep}", "nested deeper than 64 levels"), ("{bigint}", "an integer of 5000 digits"),
        ("{bin}", "is not UTF-8 text"), ("{truncated}", "not JSON, truncated or corrupt"),
        ("{empty}", "not JSON, truncated or corrupt"), ("{huge}", "above the limit of"),
        ("{deep_dict}", "nested deeper than 64 levels"), ("{list}", "must be a JSON object"),
    ]:
        add(["validate", target], BAD, expect)
    add(["validate", "{res}", "{fifo}"], ERR, "is a fifo", name="validate a good file and a fifo")
    add(["validate", "{good_dir}"], OK)

    # -- compare and check read result files through the same reader -------------------------------------------
    for target, expect in [("{deep}", "nested deeper than 64 levels"), ("{bigint}", "an integer of 5000 digits"),
                           ("{fifo}", "it is a fifo"), ("/dev/zero", "it is a character device"),
                           ("{huge}", "above the limit of")]:
        add(["compare", "{res}", target], ERR, expect)
    add(["check", "{res}", "--against", "{fifo_dir}"], ERR, "a.json is a fifo")
    add(["check", "{deep}", "--against", "{good_dir}"], ERR, "nested deeper than 64 levels")

    # -- check --attack-gate: the gate file, field by field ------------------------------------------------------
    for gate, expect in [
        ("{gate_truncated}", "not JSON, truncated or corrupt"), ("{gate_empty_obj}", "field checkpoint is missing"),
        ("{gate_list}", "expected a JSON object"), ("{gate_ckpt_int}", "field checkpoint is of type int"),
        ("{gate_limit_str}", "field test_limit is of type str"),
        ("{gate_threads_bool}", "field threads is of type bool"),
        ("{gate_attacks_empty}", "field attacks must be a non-empty list"),
        ("{gate_attacks_ints}", "field attacks must be a non-empty list"),
        ("{gate_no_reference}", "field reference is missing"), ("{gate_bad_reference}", "field reference must hold"),
        ("{gate_ckpt_path}", "must be a file name beside the gate file"),
        ("{gate_limit_zero}", "field test_limit must be in 1..1000000"),
        ("{gate_deep}", "nested deeper than 64 levels"), ("{gate_bigint}", "an integer of 5000 digits"),
        ("{bin}", "is not UTF-8 text"), ("{fifo}", "is a fifo, not a regular file"),
        ("{empty_dir}", "is a folder, not a regular file"), ("{tmp}/none.json", "not found"),
        ("{gate_no_checkpoint}", "gate checkpoint"),
    ]:
        add(["check", "--attack-gate", gate], ERR, expect)

    # -- reproduce --run-arg: nothing the grid sets, in any spelling -------------------------------------------------
    for ra, expect in [
        ("--defense=lw", "--defense is set by the grid"), ("--dataset=cifar10", "--dataset is set by the grid"),
        ("--preset=paper", "--preset is set by the grid"), ("--seed=1", "--seed is set by the grid"),
        ("--out=x; touch P", "--out is set by the grid"), ("--resume", "--resume is set by the grid"),
        ("--train-attack=average", "--train-attack is set by the grid"), ("--def=lw", "--defense is set"),
        ("--datas=cifar10", "--dataset is set"), ("--pre=paper", "--preset is set"), ("--ou=x", "--out is set"),
        ("--res", "--resume is set"), ("--de=lw", "could mean --defense, --device"),
        ("--se=1", "could mean --seed, --set"), ("-h", "--help is set"), ("--help", "--help is set"),
        ("--train-limit=1\ntouch X", "holds a control character"), ("--bogus", "unrecognized arguments: --bogus"),
        ("--epochs=x", "invalid int value"), ("--", "would end the options of every run"),
        ("--set", "expected one argument"),
    ]:
        add([*REPRO, f"--run-arg={ra}", "--dry-run"], ERR, expect, name=f"reproduce --run-arg={ra!r}")
    add([*REPRO, "--run-arg=--defense", "--run-arg=lw", "--dry-run"], ERR, "--defense is set by the grid",
        name="reproduce --run-arg --defense --run-arg lw")
    add([*REPRO, "--run-arg=--seed", "--run-arg=1"], ERR, "--seed is set by the grid",
        name="reproduce --run-arg --seed --run-arg 1 (no dry run)")

    # -- reproduce: folders, seeds ------------------------------------------------------------------------------------
    base = ["reproduce", "cpu", "--preset", "smoke", "--seeds", "0", "--defenses", "adv"]
    for argv, expect in [
        (["--runs-dir", "{file}", "--report-only", "--no-board"], "--runs-dir {file} is a file"),
        (["--runs-dir", "{file}/r", "--report-only", "--no-board"], "which is a file; give a folder path with --runs"),
        (["--runs-dir", "{file}", "--dry-run"], "--runs-dir {file} is a file"),
        (["--runs-dir", "{tmp}/r", "--board", "{file}", "--report-only"], "--board {file} is a file"),
        (["--runs-dir", "{tmp}/r", "--board", "{file}/b", "--report-only"], "folder path with --board"),
        (["--runs-dir", "{tmp}/a\nb", "--dry-run"], "holds a control character"),
        (["--runs-dir", "{tmp}/r", "--board", "{file}", "--dry-run"], "--board {file} is a file"),
        (["--runs-dir", "{tmp}/r", "--board", "{file}", "--executor", "slurm", "--print-sbatch", "--report-only"],
         "--board {file} is a file"),
    ]:
        add(base + argv, ERR, expect)
    for seeds, expect in [("0,,1", "has an empty item"), ("0,0", "seed 0 is given twice"), ("0,1,", "empty item")]:
        add(["reproduce", "cpu", "--preset", "smoke", "--seeds", seeds, "--dry-run"], ERR, expect)

    # -- reproduce --executor slurm: values by type, one word each -------------------------------------------------
    for flag, value, expect in [
        ("--partition", "gpu\ntouch X", "--partition must be one word"), ("--partition", "gpu --wrap=x", "one word"),
        ("--partition", "#SBATCH", "one word"), ("--partition", "a;b", "one word"), ("--partition", "", "one word"),
        ("--partition", "'gpu'", "one word"), ("--time-min", "0", "--time-min must be a whole number"),
        ("--gpus-per-job", "-1", "--gpus-per-job must be a whole number"),
        ("--cpus-per-job", "0", "--cpus-per-job must be a whole number"), ("--mem-gb", "0", "--mem-gb must be"),
    ]:
        add([*SLURM, flag, value], ERR, expect, name=f"reproduce slurm {flag} {value!r}")
    for cfg, expect in [
        ("{slurm_newline}", "account must be one word"), ("{slurm_gpus_true}", "gpus_per_job must be a whole number"),
        ("{slurm_gpus_str}", "gpus_per_job must be a whole number"), ("{slurm_partition_list}", "partition must be"),
        ("{slurm_time_huge}", "time_min must be a whole number"), ("{slurm_qos_hash}", "qos must be one word"),
        ("{slurm_constraint_space}", "constraint must be one word"), ("{slurm_unknown}", "unknown key(s) partiton"),
        ("{slurm_list}", "expected a table of options"), ("{slurm_binary}", "is not UTF-8 text"),
        ("{slurm_deep}", "nested deeper than 64 levels"), ("{slurm_bigint}", "more than 64 digits"),
        ("{slurm_bigint_json}", "an integer of 5000 digits"), ("{slurm_bad_toml}", "not valid TOML"),
        ("{fifo}", "is a fifo, not a regular file"), ("{empty_dir}", "is a folder, not a regular file"),
        ("/dev/zero", "is a character device"), ("{tmp}/none.toml", "not found"),
    ]:
        add([*SLURM, "--slurm-config", cfg], ERR, expect)
    add([*SLURM, "--slurm-config", "{slurm_ok}"], OK)
    add([*SLURM, "--partition", "gpu", "--seeds", "0", "--defenses", "adv"], OK)

    # -- eval: options read by one metric only; budgets; seeds ---------------------------------------------------------
    for argv, expect in [
        (["--metrics", "efficiency", "--budget-allocations", "3", "--policy-budgets", "1000000"],
         "--policy-budgets 1000000 is more than the 3 budget allocations"),
        (["--metrics", "efficiency", "--budget-allocations", "3", "--policy-budgets", "4"], "more than the 3"),
        (["--metrics", "efficiency", "--policy-budgets", "101"], "more than the 100 budget allocations"),
        (["--metrics", "anytime", "--policy", "entropy"], "--policy is read by --metrics budgeted or efficiency"),
        (["--metrics", "anytime", "--budget-index", "0"], "--budget-index is read by --metrics efficiency only"),
        (["--metrics", "anytime", "--policy-budgets", "2"], "--policy-budgets is read by --metrics efficiency"),
        (["--metrics", "anytime,budgeted", "--policy-budgets", "all"], "--policy-budgets is read by"),
        (["--budget-index", "3"], "--budget-index is read by --metrics efficiency only"),
        (["--seeds", "0,,1"], "--seeds '0,,1' has an empty item"), (["--seeds", "0,0"], "seed 0 is given twice"),
        (["--seeds", "1,2,1"], "seed 1 is given twice"), (["--seeds", "1,"], "has an empty item"),
        (["--per-exit-limit", "100"], "--per-exit-limit is read by the reference protocol only: add --reference"),
    ]:
        add([*EVAL, *argv], ERR, expect)
    for seeds, expect in [("0,,1", "--attack-seeds '0,,1' has an empty item"), ("3,3", "seed 3 is given twice")]:
        add(["run", "--defense", "adv", "--dataset", "fashion-mnist", "--preset", "smoke", "--quiet",
             "--attack-seeds", seeds], ERR, expect)

    # -- --set values are JSON too: bounded the same way --------------------------------------------------------
    for value, expect in [("alpha=" + "[" * 100_000, "--set alpha: nested deeper than 64"),
                          ("alpha=" + BIG, "--set alpha: an integer of 5000 digits")]:
        add(["run", "--defense", "neokd", "--dataset", "fashion-mnist", "--preset", "smoke", "--quiet", "--set",
             value], ERR, expect, name=f"run --set {value[:12]}...")
    add(["check", "--attack-gate", str(GATE), "--set", "steps=" + "[" * 100_000], ERR, "--set steps: nested deeper",
        name="check --attack-gate GATE --set steps=[[[...")

    # -- leaderboard build: inputs, and an --out it may not replace -----------------------------------------------
    lb = ["leaderboard", "build", "--out", "{tmp}/site"]
    for argv, expect in [
        (["--results", "{fifo_dir}"], "a.json is a fifo"), (["--results", "{deep_dir}"], "nested deeper than 64"),
        (["--results", "{fifo}"], "is a fifo, not a result file or folder"),
        (["--results", "{good_dir}", "--reported", "{reported_deep}"], "nested deeper than 64 levels"),
        (["--results", "{good_dir}", "--reported", "{reported_bin}"], "is not UTF-8 text"),
        (["--results", "{good_dir}", "--efficiency", "{fifo_dir}"], "a.json is a fifo"),
    ]:
        add([*lb, *argv], ERR, expect)
    for out, expect in [
        ("{file}", "--out {file} is a file"), ("{file}/site", "which is a file"),
        ("{foreign_site}", "is not empty and is not a site this command built"),
        ("{built_plus_foreign}", "holds plots/keep.txt, which no build wrote"),
    ]:
        add(["leaderboard", "build", "--results", "{good_dir}", "--out", out], ERR, expect)
    add(["leaderboard", "build", "--results", "{good_dir}", "--out", "{tmp}/site"], OK)
    return c


CASES = _cases()


def _tree(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root`` (``skip`` left out), with size and mtime for files: a file written, rewritten
    or removed shows. Folders count by name only (a writability probe, created and removed, touches their mtime)."""
    out: dict[str, tuple[int, int] | None] = {}
    for p in root.rglob("*"):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        st = p.lstat()
        out[str(p.relative_to(root))] = None if p.is_dir() and not p.is_symlink() else (st.st_size, st.st_mtime_ns)
    return out


def _gate(d: Path, name: str, doc) -> str:
    path = d / f"{name}.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("battery2-inputs")
    out: dict[str, str] = {"res": str(RESULTS / "neokd-s0.json")}
    (d / "file.txt").write_text("just text\n")
    out["file"] = str(d / "file.txt")
    os.mkfifo(d / "fifo.json")
    out["fifo"] = str(d / "fifo.json")
    for name in ("fifo_dir", "empty_dir", "summary_only_dir", "good_dir", "deep_dir"):
        (d / name).mkdir()
        out[name] = str(d / name)
    os.mkfifo(d / "fifo_dir" / "a.json")
    (d / "summary_only_dir" / "summary.json").write_text("{}")
    shutil.copy(RESULTS / "neokd-s0.json", d / "good_dir" / "neokd-s0.json")
    shutil.copy(RESULTS / "adv-s0.json", d / "good_dir" / "adv-s0.json")
    files = {"deep": "[" * 200_000, "bigint": '{"schema_version": ' + BIG + "}", "truncated": '{"schema_version": ',
             "empty": "", "deep_dict": '{"a": ' * 100 + "1" + "}" * 100, "list": "[1, 2]"}
    for name, text in files.items():
        (d / f"{name}.json").write_text(text)
        out[name] = str(d / f"{name}.json")
    (d / "bin.json").write_bytes(bytes(range(256)) * 4)
    out["bin"] = str(d / "bin.json")
    with open(d / "huge.json", "wb") as fh:  # sparse: its size is refused before a byte is read
        fh.truncate(MAX_BYTES + 1)
    out["huge"] = str(d / "huge.json")
    (d / "deep_dir" / "deep.json").write_text("[" * 200_000)

    gate = json.loads(GATE.read_text())
    g = d / "gate"
    g.mkdir()
    for name, doc in {
        "gate_truncated": '{"checkpoint": ', "gate_empty_obj": {}, "gate_list": [],
        "gate_ckpt_int": {**gate, "checkpoint": 5},
        "gate_limit_str": {**gate, "test_limit": "200"}, "gate_threads_bool": {**gate, "threads": True},
        "gate_attacks_empty": {**gate, "attacks": []}, "gate_attacks_ints": {**gate, "attacks": [1, 2]},
        "gate_no_reference": {k: v for k, v in gate.items() if k != "reference"},
        "gate_bad_reference": {**gate, "reference": {"n": "200", "adversarial": {}}},
        "gate_ckpt_path": {**gate, "checkpoint": "../../etc/passwd"}, "gate_limit_zero": {**gate, "test_limit": 0},
        "gate_deep": "{" + '"a": [' * 100_000, "gate_bigint": '{"test_limit": ' + BIG + "}",
        "gate_no_checkpoint": gate,  # valid, but its checkpoint is not beside it
    }.items():
        out[name] = _gate(g, name, doc)

    s = d / "slurm"
    s.mkdir()
    for name, text in {
        "slurm_newline.toml": 'account = "x\\ntouch X #"\n', "slurm_gpus_true.toml": "gpus_per_job = true\n",
        "slurm_gpus_str.json": '{"gpus_per_job": "2"}', "slurm_partition_list.toml": 'partition = ["a", "b"]\n',
        "slurm_time_huge.toml": "time_min = 1099511627776\n", "slurm_qos_hash.toml": 'qos = "normal #SBATCH"\n',
        "slurm_constraint_space.toml": 'constraint = "a100 --wrap=x"\n', "slurm_unknown.json": '{"partiton": "x"}',
        "slurm_list.json": '["partition", "gpu"]', "slurm_deep.toml": "a = " + "[" * 5000 + "]" * 5000 + "\n",
        "slurm_bigint.toml": f"time_min = {BIG}\n", "slurm_bigint_json.json": '{"time_min": ' + BIG + "}",
        "slurm_bad_toml.toml": "partition = \n",
        "slurm_ok.toml": '[slurm]\npartition = "gpu"\nconstraint = "a100&ib"\n',
    }.items():
        (s / name).write_text(text)
        out[name.split(".")[0]] = str(s / name)
    (s / "slurm_binary.toml").write_bytes(bytes(range(256)) * 4)
    out["slurm_binary"] = str(s / "slurm_binary.toml")

    rep = d / "reported_deep"
    rep.mkdir()
    (rep / "x.json").write_text("[" * 100_000)
    rep_bin = d / "reported_bin"
    rep_bin.mkdir()
    (rep_bin / "x.json").write_bytes(bytes(range(256)) * 4)
    out.update(reported_deep=str(rep), reported_bin=str(rep_bin))

    foreign = d / "foreign_site"
    (foreign / "plots").mkdir(parents=True)
    (foreign / "plots" / "keep.txt").write_text("mine\n")
    from neokd_bench.leaderboard.site import build

    built = d / "built_plus_foreign"
    build([d / "good_dir"], built)
    (built / "plots" / "keep.txt").write_text("mine\n")
    out.update(foreign_site=str(foreign), built_plus_foreign=str(built))
    return out


@pytest.mark.parametrize("command, argv, kind, expect", [(cmd, a, k, e) for cmd, _, a, k, e in CASES],
                         ids=[f"{cmd}: {name}" for cmd, name, _, _, _ in CASES])
@pytest.mark.timeout(60)
def test_bad_input(command, argv, kind, expect, inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEOKD_DATA_ROOT", raising=False)
    known = {"tmp": str(tmp_path), **inputs}
    argv = [re.sub(r"\{(\w+)\}", lambda m: known.get(m.group(1), m.group(0)), a) for a in argv]
    expect = re.sub(r"\{(\w+)\}", lambda m: known.get(m.group(1), m.group(0)), expect)
    inputs_dir = Path(inputs["file"]).parent
    watched = [(tmp_path.parent, tmp_path), (inputs_dir, None)]
    before = [_tree(w, skip) for w, skip in watched]
    own_before = _tree(tmp_path)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own exits
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out, err
    if kind == OK:
        assert rc == 0, err
    elif kind == ERR:
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
        assert expect in lines[0], lines[0]
    else:
        lines = out.strip().splitlines()
        assert rc == 1 and not err, err
        assert len(lines) == 2 and expect in lines[0] and lines[1] == "0 of 1 result files valid", out
    assert [_tree(w, skip) for w, skip in watched] == before, "a case wrote a file outside its folder"
    if kind != OK:
        assert _tree(tmp_path) == own_before, "a refused case wrote a file"


def test_battery2_totals():
    """At least 60 cases over every command of the issue; the totals by command, for the report."""
    by_cmd = collections.Counter(cmd for cmd, _, _, _, _ in CASES)
    print(f"{len(CASES)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(by_cmd.items())))
    assert len(CASES) >= 60
    assert {"reproduce", "validate", "check", "leaderboard", "eval"} <= set(by_cmd)
    assert len({name for _, name, _, _, _ in CASES}) == len(CASES)  # ids are unique


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_leaderboard_build_never_deletes_a_file_it_did_not_write(tmp_path, capsys):
    """The data loss of the old build (it emptied ``plots/`` and ``entry/`` of --out): files the build did not
    write survive every refused build byte for byte; a previous build is replaced whole, and a failed build
    leaves it as it was, with no temporary folder behind."""
    res = tmp_path / "res"
    res.mkdir()
    shutil.copy(RESULTS / "adv-s0.json", res / "adv-s0.json")
    site = tmp_path / "v"
    for sub in ("plots", "entry"):
        (site / sub).mkdir(parents=True)
        (site / sub / "keep.txt").write_text(f"{sub}: not the build's\n")
    before = _files(site)
    assert main(["leaderboard", "build", "--results", str(res), "--out", str(site)]) == 2
    assert "not a site this command built" in capsys.readouterr().err
    assert _files(site) == before

    # a previous build is replaced whole: its own files go, the new ones come
    built = tmp_path / "built"
    assert main(["leaderboard", "build", "--results", str(res), "--out", str(built)]) == 0
    (built / "entry" / "stale-page.html").write_text("from an older build\n")
    marker = built / ".neokd-bench-site"
    marker.write_text(marker.read_text() + "entry/stale-page.html\n")  # as if that build had written it
    shutil.copy(RESULTS / "neokd-s0.json", res / "neokd-s0.json")
    assert main(["leaderboard", "build", "--results", str(res), "--out", str(built)]) == 0
    assert not (built / "entry" / "stale-page.html").exists() and (built / "index.html").is_file()
    first = _files(built)

    # a file added to a build is not the build's: refused, kept
    (built / "plots" / "notes.txt").write_text("mine\n")
    assert main(["leaderboard", "build", "--results", str(res), "--out", str(built)]) == 2
    assert "holds plots/notes.txt, which no build wrote" in capsys.readouterr().err
    assert (built / "plots" / "notes.txt").read_text() == "mine\n"
    (built / "plots" / "notes.txt").unlink()

    # a build that fails midway (an invalid result file) leaves the previous site as it was
    (res / "broken.json").write_text('{"schema_version": ')
    assert main(["leaderboard", "build", "--results", str(res), "--out", str(built)]) == 2
    assert _files(built) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built", "res", "v"]  # no temporary folder left


def test_printed_commands_are_shell_quoted(tmp_path, monkeypatch, capsys):
    """``--dry-run`` and ``--print-sbatch`` print each run's command so that a shell reads back exactly the argv
    the run gets: a value with a space or a ``;`` is quoted, never a second command."""
    import shlex

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "my runs;touch P"
    args = ["reproduce", "cpu", "--preset", "smoke", "--seeds", "0", "--defenses", "adv", "--runs-dir", str(runs),
            "--run-arg=--data-root=my data;touch Q"]
    want = ["run", "--defense", "adv", "--dataset", "fashion-mnist", "--preset", "smoke", "--seed", "0", "--out",
            str(runs / "adv-fashion-mnist-smoke-s0"), "--quiet", "--data-root=my data;touch Q"]
    assert main([*args, "--dry-run", "--no-board"]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if "[todo]" in s)
    assert shlex.split(line.split("]", 1)[1]) == ["neokd-bench", *want]
    assert main([*args, "--executor", "slurm", "--print-sbatch"]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("# task 0: "))
    assert shlex.split(line[len("# task 0: "):]) == ["neokd-bench", *want]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # printing wrote nothing
