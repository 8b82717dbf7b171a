"""A battery of bad inputs across every sub-command.

Every case calls the CLI in-process (``neokd_bench.cli.main``) from an empty working folder and must end
either in exactly one line on stderr starting with ``error:`` and exit code 2, or in one of the documented
successes marked ``OK``. No case may print a traceback, write a file anywhere (the working folder, the
inputs' folder, the temporary root above them) or leave a partial file. Every error is found before any
training or evaluation starts, so the whole battery runs in seconds (inputs are built once per module).

Placeholders in the arguments are files built by the ``inputs`` fixture: ``{ckpt}`` a real checkpoint
written by ``neokd-bench run``; ``{run}`` its run folder; ``{res}``/``{res2}`` committed result files;
``{file}`` a plain text file; ``{bin}`` a binary file; and broken variants described in ``_build_inputs``.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from neokd_bench.cli import main

OK = "ok"  # a documented success: exit 0
RESULTS = Path(__file__).resolve().parents[1] / "leaderboard" / "results" / "fashion-mnist-smoke"
RUN = ["run", "--defense", "adv", "--dataset", "fashion-mnist", "--preset", "smoke", "--quiet", "--no-eval"]
BIG = str(2**64)


def _cases() -> list[tuple[str, str, list[str], str]]:
    """(category, id, argv, expected): expected is OK or a substring of the one-line error."""
    c: list[tuple[str, str, list[str], str]] = []

    def add(cat: str, argv: list[str], expect: str, name: str | None = None) -> None:
        c.append((cat, name or " ".join(argv), argv, expect))

    # -- the command line itself (argparse) --------------------------------------------------------------
    for argv, expect in [
        ([], "no command given"), (["trian"], "invalid choice"), (["--bogus"], "unrecognized"),
        (["run"], "required"), (["run", "--defense", "adv"], "--dataset"),
        (["run", "--dataset", "fashion-mnist"], "--defense"), (RUN + ["--epochs", "abc"], "invalid int"),
        (RUN + ["--lr", "fast"], "invalid float"), (RUN + ["--amp", "fp16"], "invalid choice"),
        (RUN + ["--data-source", "web"], "invalid choice"), (RUN + ["--train-attack", "max"], "invalid choice"),
        (RUN + ["--seed", "1.5"], "invalid int"), (RUN + ["--bogus"], "unrecognized"),
        (["eval"], "CHECKPOINT"), (["eval", "{ckpt}", "--steps", "x"], "invalid int"),
        (["eval", "{ckpt}", "--thresholds-on", "middle"], "invalid choice"), (["compare"], "RESULT"),
        (["masking"], "CHECKPOINT"), (["masking", "{ckpt}", "--n", "many"], "invalid int"),
        (["list", "modles"], "invalid choice"), (["list", "--bogus"], "unrecognized"),
        (["eval", "{ckpt}", "--batch-size", "1e3"], "invalid int"),
    ]:
        add("argparse", argv, expect)

    # -- run: values checked before any data loads ---------------------------------------------------
    for flag in ("--epochs", "--batch-size", "--train-limit", "--test-limit", "--eval-steps", "--val-size"):
        for v in ("0", "-3"):
            add("run values", RUN + [flag, v], f"{flag} must be at least 1")
    for v in ("0", "-0.1", "nan", "inf"):
        add("run values", RUN + ["--lr", v], "--lr must be positive")
    for v in ("0", "-1", "nan"):
        add("run values", RUN + ["--grad-clip", v], "--grad-clip must be positive")
    for v, expect in [("-0.1", "--eps must be >= 0"), ("nan", "--eps must be >= 0"), ("5", "must be in [0, 1]"),
                      ("inf", "--eps must be >= 0"), ("1.5", "must be in [0, 1]"), ("0.5", "--force")]:
        add("run values", RUN + ["--eps", v], expect)
    for v in ("-1", "2", "nan"):
        add("run values", RUN + ["--step-size", v], "--step-size must be in [0, 1]")
    for v in ("-1", BIG, "9" * 30):
        add("run values", RUN + ["--seed", v], "--seed must be in 0..")
    for v, expect in [("", "--attack-seeds is empty"), (",", "--attack-seeds is empty"),
                      ("a,b", "--attack-seeds expects comma-separated integers"), ("-1", "outside 0..2**63-1"),
                      (BIG, "outside 0..2**63-1")]:
        add("run eval options", RUN + ["--attack-seeds", v], expect)
    for v, expect in [("bogus", "unknown metric 'bogus'"), ("", "--metrics is empty"),
                      ("anytime,bogus", "unknown metric 'bogus'")]:
        add("run eval options", RUN + ["--metrics", v], expect)
    for v, expect in [("alpha", "--set expects KEY=VALUE"), ("=3", "--set expects KEY=VALUE"),
                      ("alpah=3", "alpah"), ("steps=abc", "steps")]:
        add("run --set", RUN + ["--set", v], expect)
    for v in ("alpha=[1,2]", "beta={}", "alpha=\"x\"", "gamma=3"):
        add("run --set", ["run", "--defense", "neokd", "--dataset", "fashion-mnist", "--preset", "smoke",
                          "--quiet", "--set", v], v.split("=")[0])
    for argv, expect in [
        (["run", "--defense", "neokdd", "--dataset", "fashion-mnist"], "did you mean --defense neokd"),
        (["run", "--defense", "", "--dataset", "fashion-mnist"], "defense name '' is not valid"),
        (["run", "--defense", "adv", "--dataset", "fashion-mnst"], "unknown dataset"),
        (["run", "--defense", "adv", "--dataset", "fashion-mnist./../x"],
         "dataset name 'fashion-mnist./../x' is not valid"),
        (["run", "--defense", "adv", "--dataset", "fashion-mnist", "--preset", "huge"], "no preset 'huge'"),
        (["run", "--defense", "adv", "--dataset", "fashion-mnist", "--preset", "../../x"], "no preset"),
        (RUN + ["--model", "msdnet_cifar1000"], "unknown model"),
        (RUN + ["--device", "tpu"], "--device"), (RUN + ["--device", "cuda:7"], "--device"),
        (["run", "--defense", "adv./../../../escaped", "--dataset", "fashion-mnist", "--preset", "smoke",
          "--device", "tpu"], "error"),
    ]:
        add("run names", argv, expect)
    for out, expect in [("{file}", "is a file"), ("{file}/run", "which is a file"),
                        ("/proc/neokd-run", "cannot write in")]:
        add("output paths", RUN + ["--out", out], expect)
    add("resume", RUN + ["--out", "{tmp}/none", "--resume"], "no run folder")
    add("resume", ["run", "--defense", "neokd", "--dataset", "fashion-mnist", "--preset", "smoke", "--quiet",
                   "--out", "{run}", "--resume"], "defense 'adv', not 'neokd'")
    add("resume", RUN + ["--out", "{truncated_run}", "--resume"], "not a readable neokd-bench checkpoint")
    add("resume", ["run", "--defense", "adv", "--dataset", "fashion-mnist", "--preset", "paper", "--quiet",
                   "--out", "{run}", "--resume"], "preset 'fashion-mnist.smoke'")

    # -- run: data folders ----------------------------------------------------------------------------------
    base = ["run", "--defense", "adv", "--quiet", "--no-eval"]
    for ds, expect in [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                       ("tiny-imagenet", "tiny-imagenet-200"), ("imagenet", "{train,val}"), ("mnist", "MNIST/raw")]:
        init = ["--init", "{ckpt}"] if ds == "imagenet" else []  # its paper preset fine-tunes: data errors come first
        add("data", base + init + ["--dataset", ds, "--data-root", "{tmp}/nothing"] if ds != "mnist" else
            base + ["--dataset", ds, "--preset", "x", "--data-root", "{tmp}/nothing"],
            expect if ds != "mnist" else "no preset")
    for argv, expect in [
        (base + ["--dataset", "cifar10", "--data-source", "bundled"], "cifar10 has no bundled copy"),
        (base + ["--dataset", "cifar10", "--data-root", "{cifar_crafted}"], "refused global"),
        (base + ["--dataset", "cifar10", "--data-root", "{cifar_garbage}"], "malformed file"),
        (base + ["--dataset", "fashion-mnist", "--preset", "smoke", "--data-source", "folder"], "needs a folder"),
        (base + ["--dataset", "fashion-mnist", "--preset", "smoke", "--data-source", "auto",
                 "--data-root", "{fmnist_badgz}"], "malformed IDX file"),
        (base + ["--dataset", "fashion-mnist", "--preset", "smoke", "--val-size", "5000"], "--val-size 1..2000"),
        (base + ["--init", "{ckpt}", "--dataset", "imagenet", "--data-root", "{imagenet_small}"],
         "pass --val-size 1..3"),
        (base + ["--init", "{ckpt}", "--dataset", "imagenet", "--data-root", "{imagenet_nonimage}", "--val-size", "1"],
         "is not a readable image"),
        (base + ["--dataset", "tiny-imagenet", "--data-root", "{file}"], "tiny-imagenet"),
        (base + ["--init", "{tmp}/none.pth", "--dataset", "imagenet"], "--init"),
    ]:
        add("data", argv, expect)

    # -- eval -----------------------------------------------------------------------------------------
    for ck, expect in [("{tmp}/none.pt", "no checkpoint"), ("{run}", "not a readable"), ("{file}", "not a readable"),
                       ("{bin}", "not a readable"), ("{truncated_run}/checkpoint.pt", "not a readable"),
                       ("{res}", "not a readable"), ("{ck_tensor}", "not a neokd-bench checkpoint"),
                       ("{ck_classes}", "do not fit model"), ("{ck_strkw}", "wrong type"),
                       ("{ck_model}", "unknown model"), ("{ck_nokeys}", "has no 'model_name'"),
                       ("{ck_cifar_bundled}", "cifar10 has no bundled copy"),
                       ("{ck_badkw}", "cannot be built")]:
        add("eval checkpoint", ["eval", ck, "--quiet"], expect)
    for argv, expect in [
        (["--attacks", ""], "no attack given"), (["--attacks", ","], "no attack given"),
        (["--attacks", "pgd:"], "empty objective"), (["--attacks", "nope"], "unknown attack"),
        (["--attacks", "pgd:bogus"], "unknown objective"), (["--attacks", "pgd:exit:7"], "out of range"),
        (["--attacks", "pgd:exit:-1"], "negative exit"), (["--metrics", "bogus"], "unknown metric"),
        (["--metrics", ","], "--metrics is empty"), (["--seeds", ""], "--seeds is empty"),
        (["--seeds", "x"], "--seeds expects"), (["--seeds", "-1"], "outside 0..2**63-1"),
        (["--steps", "0"], "--steps must be at least 1"), (["--test-limit", "0"], "--test-limit"),
        (["--batch-size", "0"], "--batch-size"), (["--val-limit", "-1"], "--val-limit"),
        (["--transfer-limit", "0"], "--transfer-limit"), (["--val-size", "0"], "--val-size"),
        (["--device", "tpu"], "--device"), (["--out", "{tmp}"], "is a folder"),
        (["--out", "{file}/r.json"], "which is a file"), (["--out", "/proc/neokd-eval.json"], "cannot write in"),
        (["--val-size", "99999"], "--val-size 1..2000"),
    ]:
        add("eval options", ["eval", "{ckpt}", "--quiet", *argv], expect)

    # -- compare ----------------------------------------------------------------------------------------
    for argv, expect in [
        (["{res}"], "at least two result files"), (["{res}", "{tmp}/none.json"], "not found"),
        (["{res}", "{bin}"], "binary file"), (["{res}", "{ckpt}"], "binary file"),
        (["{res}", "{file}"], "not JSON"), (["{res}", "{json_list}"], "must be a JSON object"),
        (["{res}", "{json_bad}"], "result field"), (["{res}", "{json_version}"], "unknown schema version"),
        (["{res}", "{run}"], "not found"),
        (["{res}", "{res2}", "--target", "0"], "--target"), (["{res}", "{res2}", "--target", "101"], "--target"),
        (["{res}", "{res2}", "--target", "nan"], "--target"), (["{res}", "{res2}", "--target", "-5"], "--target"),
        (["{res}", "{res2}", "--plot", "{tmp}"], "is a folder"),
        (["{res}", "{res2}", "--plot", "{file}/p.png"], "which is a file"),
        (["{res}", "{res2}", "--plot", "/proc/neokd.png"], "cannot write in"),
        (["{res}", "{res2}", "--curve", "bogus"], "no budgeted curve 'bogus'"),
        (["{res}", "{res_nobudget}", "--target", "40"], "a budgeted evaluation"),
        (["{res}", "{res2}"], OK), (["{res}", "{res2}", "--curve", "clean"], OK),
    ]:
        add("compare", ["compare", *argv], expect)

    # -- masking ----------------------------------------------------------------------------------------
    for argv, expect in [
        (["--n", "0"], "--n must be at least 1"), (["--steps", "0"], "--steps"),
        (["--square-queries", "0"], "--square-queries"), (["--seed", "-1"], "--seed must be in 0.."),
        (["--seed", BIG], "--seed must be in 0.."), (["--eps", "5"], "must be in [0, 1]"),
        (["--eps", "-1"], "--eps must be positive"), (["--eps", "0.5"], "--force"),
        (["--step-size", "0"], "--step-size"), (["--step-size", "2"], "--step-size"),
        (["--objective", "bogus"], "unknown objective"), (["--objective", "exit:9"], "out of range"),
        (["--json", "{tmp}"], "is a folder"), (["--json", "{file}/m.json"], "which is a file"),
        (["--json", "/proc/neokd-mask.json"], "cannot write in"), (["--device", "tpu"], "--device"),
    ]:
        add("masking", ["masking", "{ckpt}", *argv], expect)
    for ck, expect in [("{tmp}/none.pt", "no checkpoint"), ("{file}", "not a readable"),
                       ("{ck_classes}", "do not fit model"), ("{ck_strkw}", "wrong type")]:
        add("masking", ["masking", ck], expect)

    # -- list, and the documented successes -----------------------------------------------------------
    for argv, expect in [(["list", "datasets"], OK), (["list", "attacks"], OK), (["list", "defenses"], OK),
                         (["list", "defenses", "--pattern", "zzz*"], OK), (["--version"], OK),
                         (["run", "--help"], OK)]:
        add("list and successes", argv, expect)
    return c


CASES = _cases()


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, trained_checkpoint) -> dict[str, str]:
    return _build_inputs(tmp_path_factory.mktemp("battery-inputs"), Path(trained_checkpoint))


def _build_inputs(d: Path, ckpt: Path) -> dict[str, str]:
    from neokd_bench.trainer import load_checkpoint

    run = d / "run"
    shutil.copytree(ckpt.parent, run)
    state = load_checkpoint(run / "checkpoint.pt")
    (d / "file.txt").write_text("just text\n")
    (d / "bin").write_bytes(bytes(range(256)) * 4)
    trunc = d / "truncated_run"
    shutil.copytree(ckpt.parent, trunc)
    data = (trunc / "checkpoint.pt").read_bytes()
    (trunc / "checkpoint.pt").write_bytes(data[: len(data) // 3])

    def variant(name: str, **changes) -> str:
        s = dict(state)
        for k, v in changes.items():
            if v is None:
                s.pop(k, None)
            else:
                s[k] = v
        torch.save(s, d / f"{name}.pt")
        return str(d / f"{name}.pt")

    torch.save(torch.zeros(3), d / "tensor.pt")
    out = {"ckpt": str(run / "checkpoint.pt"), "run": str(run), "file": str(d / "file.txt"), "bin": str(d / "bin"),
           "truncated_run": str(trunc), "res": str(RESULTS / "neokd-s0.json"), "res2": str(RESULTS / "adv-s0.json"),
           "ck_tensor": str(d / "tensor.pt"),
           "ck_classes": variant("classes", model_kwargs={**state["model_kwargs"], "num_classes": 7}),
           "ck_strkw": variant("strkw", model_kwargs="num_classes=10"),
           "ck_model": variant("model", model_name="nosuchnet"),
           "ck_nokeys": variant("nokeys", model_name=None),
           "ck_cifar_bundled": variant("cifarb", dataset="cifar10", data_source="bundled"),
           "ck_badkw": variant("badkw", model_kwargs={**state["model_kwargs"], "num_classes": "ten"})}
    res = json.loads((RESULTS / "neokd-s0.json").read_text())
    (d / "list.json").write_text("[1, 2]")
    (d / "bad.json").write_text(json.dumps({**res, "model": {**res["model"], "num_exits": "3"}}))
    (d / "version.json").write_text(json.dumps({**res, "schema_version": "99"}))
    nob = json.loads((RESULTS / "adv-s0.json").read_text())
    nob["evaluation"].pop("budgeted")
    nob["evaluation"]["protocol"]["metrics"] = ["anytime", "transfer"]
    (d / "nobudget.json").write_text(json.dumps(nob))
    out.update(json_list=str(d / "list.json"), json_bad=str(d / "bad.json"), json_version=str(d / "version.json"),
               res_nobudget=str(d / "nobudget.json"))

    # data folders
    cif = d / "cifar_crafted" / "cifar-10-batches-py"
    cif.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(cif / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8), b"labels": [1, 2, 3, 4]}, fh,
                        protocol=2)
    with open(cif / "data_batch_1", "wb") as fh:  # refers to os.system: never called
        fh.write(b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
    garbage = d / "cifar_garbage" / "cifar-10-batches-py"
    shutil.copytree(cif, garbage)
    (garbage / "data_batch_1").write_bytes(b"not a pickle")
    fm = d / "fmnist_badgz" / "FashionMNIST" / "raw"
    fm.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (fm / f"{stem}.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    from PIL import Image

    for name, extra in (("imagenet_small", False), ("imagenet_nonimage", True)):
        root = d / name
        for w in ["n01440764", "n01443537"]:
            for j in range(2):
                p = root / "train" / w / f"{w}_{j}.JPEG"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)).save(p, format="JPEG")
            p = root / "val" / w / "v.JPEG"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)).save(p, format="JPEG")
        if extra:
            (root / "train" / "n01440764" / "notes.JPEG").write_text("not an image")
        out[name] = str(root)
    out.update(cifar_crafted=str(d / "cifar_crafted"), cifar_garbage=str(d / "cifar_garbage"),
               fmnist_badgz=str(d / "fmnist_badgz"))
    return out


@pytest.mark.parametrize("category, argv, expect", [(cat, a, e) for cat, _, a, e in CASES],
                         ids=[f"{cat}: {name}" for cat, name, _, _ in CASES])
def test_bad_input(category, argv, expect, inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEOKD_DATA_ROOT", raising=False)
    known = {"tmp": str(tmp_path), **inputs}
    argv = [re.sub(r"\{(\w+)\}", lambda m: known.get(m.group(1), m.group(0)), a) for a in argv]
    watched = [tmp_path.parent, Path(inputs["run"]).parent]
    before = [_tree(w) for w in watched]
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own exits (--help, --version, usage errors)
        rc = int(exc.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    if expect == OK:
        assert rc == 0, err
    else:
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
        assert expect in lines[0], lines[0]
    assert [_tree(w) for w in watched] == before, "a case wrote a file"


def test_battery_totals():
    """At least 120 cases over every sub-command; the totals by category, for the report."""
    by_cat = collections.Counter(cat for cat, _, _, _ in CASES)
    commands = {a[0] if a else "" for _, _, a, _ in CASES}
    print(f"{len(CASES)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(by_cat.items())))
    assert len(CASES) >= 120
    assert {"run", "eval", "compare", "masking", "list"} <= commands
    assert len({name for _, name, _, _ in CASES}) == len(CASES)  # ids are unique
    assert os.sep not in "".join(by_cat)
