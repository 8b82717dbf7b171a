"""Bad input at the command line: one line saying what to type instead, exit code 2, no traceback,
no half-written files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from neokd_bench.cli import main

RUN = ["run", "--defense", "adv", "--dataset", "fashion-mnist", "--preset", "smoke", "--quiet"]


def _check_one_line_error(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error:")
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


def _no_files(path: Path) -> None:
    assert not path.exists() or not any(path.rglob("*")), list(path.rglob("*"))


@pytest.mark.parametrize("argv, needles", [
    (["run", "--defense", "neokdd", "--dataset", "fashion-mnist"], ["unknown defense", "did you mean --defense neokd"]),
    (["run", "--defense", "adv", "--dataset", "fashion-mnst"], ["unknown dataset", "fashion-mnist"]),
    (RUN + ["--model", "msdnet_cifar1000"], ["unknown model", "msdnet_cifar100"]),
    (RUN + ["--eps", "-0.1"], ["--eps must be >= 0"]),
    (RUN + ["--epochs", "0"], ["--epochs must be at least 1"]),
    (RUN + ["--batch-size", "-4"], ["--batch-size must be at least 1"]),
    (RUN + ["--set", "alpha"], ["--set expects KEY=VALUE"]),
    (RUN + ["--attack-seeds", "a,b"], ["--attack-seeds expects comma-separated integers"]),
    (["run", "--defense", "adv", "--dataset", "fashion-mnist", "--preset", "huge"], ["no preset 'huge'", "--preset"]),
    (["run", "--defense", "adv"], ["--dataset"]),
])
def test_bad_run_arguments(argv, needles, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = ["--out", str(tmp_path / "out")] if "--dataset" in argv else []
    _check_one_line_error(capsys, _main(argv + out), *needles)
    _no_files(tmp_path / "out")
    _no_files(tmp_path / "runs")


def _main(argv: list[str]) -> int:
    """`main`, with argparse's own exits (missing required options) turned into return codes."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def test_unknown_defense_config_field(capsys, tmp_path):
    rc = main(RUN + ["--set", "alpah=3", "--out", str(tmp_path / "o")])
    _check_one_line_error(capsys, rc, "alpah")
    _no_files(tmp_path / "o")


@pytest.mark.parametrize("dataset, layout", [("cifar10", "cifar-10-batches-py"),
                                             ("tiny-imagenet", "tiny-imagenet-200")])
def test_missing_data_folder_names_the_layout(dataset, layout, capsys, tmp_path):
    rc = main(["run", "--defense", "adv", "--dataset", dataset, "--data-root", str(tmp_path / "nope"),
               "--quiet", "--out", str(tmp_path / "o")])
    _check_one_line_error(capsys, rc, layout)
    _no_files(tmp_path / "o")


def test_malformed_data_folder(capsys, tmp_path):
    bad = tmp_path / "data" / "cifar-10-batches-py"
    bad.mkdir(parents=True)
    (bad / "data_batch_1").write_bytes(b"not a pickle")
    rc = main(["run", "--defense", "adv", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"),
               "--quiet", "--out", str(tmp_path / "o")])
    _check_one_line_error(capsys, rc, "cifar-10-batches-py")
    _no_files(tmp_path / "o")


def test_exit_index_out_of_range_in_eval(capsys, trained_checkpoint, tmp_path):
    rc = main(["eval", str(trained_checkpoint), "--attacks", "pgd:exit:7", "--out", str(tmp_path / "r.json")])
    _check_one_line_error(capsys, rc, "'exit:7' is out of range", "exit:0 .. exit:2")
    assert not (tmp_path / "r.json").exists()


def test_missing_checkpoint(capsys, tmp_path):
    rc = main(["eval", str(tmp_path / "none.pt")])
    _check_one_line_error(capsys, rc, "no checkpoint")


def test_subprocess_has_no_traceback(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.run([sys.executable, "-m", "neokd_bench.cli", "run", "--defense", "adv", "--dataset",
                        "fashion-mnist", "--preset", "smoke", "--epochs", "0", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert not (tmp_path / "o").exists()


def test_help_describes_the_tool_and_every_command(capsys, monkeypatch):
    """`neokd-bench --help` says what the tool is and lists every command with its line; `COMMAND --help`
    opens with the command's description (the help is one text, in bench/cli.py)."""
    from neokd_bench.cli import COMMANDS, DESCRIPTION, build_parser

    monkeypatch.setenv("COLUMNS", "250")
    text = build_parser().format_help()
    assert " ".join(DESCRIPTION.split()) in " ".join(text.split()) and "``" not in text
    for name, (short, long) in COMMANDS.items():
        assert f"{name}  " in text or f"{name}\n" in text
        assert short in text
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert " ".join(long.split()) in " ".join(capsys.readouterr().out.split())
