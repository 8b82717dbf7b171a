"""Precision that fits the hardware: ``--amp auto`` picks bf16 only where the device computes it
natively, an explicit bf16 on a CPU without it warns, the CPU presets stay fp32 with the training config they
always had (``run --resume`` compares it), and bf16 autocast agrees with fp32 on a fixed batch."""

from __future__ import annotations

import neokd_bench as nb
import pytest
import torch
from neokd_bench.cli import build_parser
from neokd_bench.commands.run import train_config
from neokd_bench.errors import UsageError
from neokd_bench.precision import cpu_flags, describe_hardware, native_bf16, resolve_amp
from neokd_bench.presets import TRAIN_PRESETS
from neokd_bench.trainer import TrainConfig, check_resume, train

AVX2_EPYC = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse sse2 avx avx2 fma\n\n" \
            "processor\t: 1\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
AVX512_BF16_EPYC = "model name\t: AMD EPYC 9B14\nflags\t\t: avx avx2 avx512f avx512bw avx512_vnni avx512_bf16\n"
SAPPHIRE_RAPIDS = "model name\t: Intel Xeon\nflags\t\t: avx2 avx512f amx_bf16 amx_tile amx_int8\n"


def test_cpu_flags_are_read_from_cpuinfo_text():
    assert cpu_flags(AVX2_EPYC) == {"fpu", "sse", "sse2", "avx", "avx2", "fma"}
    assert "avx512_bf16" in cpu_flags(AVX512_BF16_EPYC)
    assert cpu_flags("no flags here") == frozenset()


@pytest.mark.parametrize("cpuinfo, native", [(AVX2_EPYC, False), (AVX512_BF16_EPYC, True), (SAPPHIRE_RAPIDS, True)])
def test_auto_picks_bf16_only_on_a_cpu_that_computes_it(cpuinfo, native, capsys):
    flags = cpu_flags(cpuinfo)
    assert native_bf16("cpu", flags) is native
    assert resolve_amp("auto", "cpu", flags) == ("bf16" if native else "none")
    assert resolve_amp("none", "cpu", flags) == "none"
    assert capsys.readouterr().err == ""  # auto and none never warn


def test_explicit_bf16_on_a_cpu_without_it_warns_in_one_line(capsys):
    assert resolve_amp("bf16", "cpu", cpu_flags(AVX2_EPYC)) == "bf16"  # the user's choice is kept
    err = capsys.readouterr().err
    assert err.startswith("warning:") and err.count("\n") == 1 and "slower" in err
    assert resolve_amp("bf16", "cpu", cpu_flags(AVX512_BF16_EPYC)) == "bf16"
    assert capsys.readouterr().err == ""


def test_hardware_line_names_the_instruction_sets():
    line = describe_hardware("cpu", AVX2_EPYC)
    assert line == "CPU AMD EPYC 7B12 (AVX2 yes, AVX-512 no, AVX512-BF16 no, AMX-BF16 no)"


def test_paper_presets_default_to_auto_and_the_cpu_presets_to_fp32():
    for (dataset, tag), preset in TRAIN_PRESETS.items():
        assert preset.amp == ("auto" if tag == "paper" else "none"), (dataset, tag)


# The training config the `cpu` and `smoke` presets gave before `auto` existed; runs started then are resumed
# by comparing it with the new one (trainer.check_resume), so it must not change.
BEFORE = {
    "cpu": {"epochs": 5, "batch_size": 128, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "milestones": [],
            "seed": 0, "device": "auto", "amp": "none", "num_workers": 0, "train_limit": None,
            "grad_clip_norm": None},
    "smoke": {"epochs": 3, "batch_size": 128, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "milestones": [2],
              "seed": 0, "device": "auto", "amp": "none", "num_workers": 0, "train_limit": 4096,
              "grad_clip_norm": 5.0},
}


@pytest.mark.parametrize("tag", sorted(BEFORE))
def test_runs_of_the_cpu_presets_started_before_auto_still_resume(tag, tmp_path):
    args = build_parser().parse_args(["run", "--defense", "neokd", "--dataset", "fashion-mnist", "--preset", tag])
    cfg = train_config(args, TRAIN_PRESETS[("fashion-mnist", tag)])
    assert cfg.amp == "none"
    check_resume({"train_config": BEFORE[tag]}, {}, cfg, tmp_path / "checkpoint.pt")  # no error
    args = build_parser().parse_args(["run", "--defense", "neokd", "--dataset", "cifar10"])
    assert train_config(args, TRAIN_PRESETS[("cifar10", "paper")]).amp == "auto"


def test_resume_ignores_a_training_field_added_later_while_it_holds_its_default(tmp_path):
    """A checkpoint written before a TrainConfig field existed (here: pretend ``grad_clip_norm`` is new) resumes
    when the field is at its default, and is refused, naming it, when it is not."""
    old = {k: v for k, v in BEFORE["cpu"].items() if k != "grad_clip_norm"}
    path = tmp_path / "checkpoint.pt"
    check_resume({"train_config": old}, {}, TrainConfig(epochs=5, lr=0.01), path)
    with pytest.raises(UsageError, match="grad_clip_norm"):
        check_resume({"train_config": old}, {}, TrainConfig(epochs=5, lr=0.01, grad_clip_norm=5.0), path)
    with pytest.raises(UsageError, match="lr"):
        check_resume({"train_config": BEFORE["cpu"]}, {}, TrainConfig(epochs=5, lr=0.05), path)


def test_the_result_records_the_resolved_precision(fmnist, tmp_path):
    model = nb.create_model("smallcnn")
    defense = nb.create_defense("adv", steps=1)
    defense.setup(dataset="fashion-mnist", num_exits=3, num_classes=10, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=16, seed=0, device="cpu", amp="auto", train_limit=16)
    out = train(model, defense, fmnist.train, cfg, out_dir=tmp_path, progress=False)
    assert out["config"]["amp"] == "auto"
    assert out["amp"] == resolve_amp("auto", "cpu")


@pytest.mark.parametrize("defense_name", ["neokd", "adv"])
def test_bf16_autocast_loss_agrees_with_fp32_on_a_fixed_batch(fmnist, defense_name):
    """The training loss of one fixed batch (clean and adversarial images fixed) under bf16 autocast is within
    1e-2 relative error of the fp32 loss (fp32 master weights; the losses are computed in fp32)."""
    torch.manual_seed(0)
    model = nb.create_model("smallcnn", mean=list(fmnist.mean), std=list(fmnist.std)).train()
    defense = nb.create_defense(defense_name)
    defense.setup(dataset="fashion-mnist", num_exits=3, num_classes=10, seed=0)
    defense.start_epoch(0)
    x, y = fmnist.train.tensors()
    x, y = x[:64], y[:64]
    x_adv = defense.attack(seed=0)(model.eval(), x, y)
    model.train()
    for m in model.modules():  # dropout off: the two losses must see the same network
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    with torch.no_grad():
        ref = defense.loss(model, x, x_adv, y)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = defense.loss(model, x, x_adv, y)[0]
    assert low.dtype == torch.float32
    assert abs(float(low) - float(ref)) <= 1e-2 * abs(float(ref))


@pytest.mark.slow
def test_torch_compile_loss_agrees_with_eager_on_a_fixed_batch(fmnist):
    """``torch.compile`` (the benchmark's ``+compile`` variant) gives the training loss of a fixed batch within
    1e-2 relative error of eager fp32. Inductor on a CPU needs a C++ compiler: skipped where there is none."""
    import shutil

    if not torch.cuda.is_available() and shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile on a CPU needs a C++ compiler")
    torch.manual_seed(0)
    model = nb.create_model("smallcnn", mean=list(fmnist.mean), std=list(fmnist.std)).eval()  # eval: no dropout
    defense = nb.create_defense("neokd")
    defense.setup(dataset="fashion-mnist", num_exits=3, num_classes=10, seed=0)
    defense.start_epoch(0)
    x, y = fmnist.train.tensors()
    x, y = x[:64], y[:64]
    x_adv = defense.attack(seed=0)(model, x, y)
    compiled = torch.compile(model)
    with torch.no_grad():
        ref = defense.loss(model, x, x_adv, y)[0]
        got = defense.loss(compiled, x, x_adv, y)[0]
    assert abs(float(got) - float(ref)) <= 1e-2 * abs(float(ref))
