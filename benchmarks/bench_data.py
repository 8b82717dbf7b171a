"""Benchmark: does data loading keep a GPU fed? Images/s delivered by the training loader of each paper dataset,
read from its real on-disk format, per number of DataLoader workers.

Run from the repository root (it prints figures; it is not a test)::

    python benchmarks/bench_data.py                                  # every dataset, workers 0,1,..,cores
    python benchmarks/bench_data.py --datasets imagenet --workers 0,1,2 --batches 8
    python benchmarks/bench_data.py --train-step                     # + the trainer's images/s, same preset

For each dataset a synthetic copy is written in the official layout (``neokd_bench.data.synthetic``: CIFAR python
batches, the Tiny-ImageNet tree with ``val_annotations.txt``, ImageNet class folders of JPEGs of ImageNet's typical
sizes, MNIST idx files), then, in a fresh child process per dataset (so that its peak memory is its own):

* ``start s`` - ``neokd_bench.load_dataset`` on that folder: reading the pickles / idx files, Tiny-ImageNet's
  decode of every JPEG into memory, ImageNet's listing and header check;
* ``peak MB`` - the child's peak resident set after loading and iterating (Linux ``ru_maxrss``);
* ``w=N img/s`` - the training split through ``torch.utils.data.DataLoader`` exactly as the trainer builds it
  (batch ``--batch``, shuffled, the preset's augmentation), ``N`` worker processes: images per second over
  ``--batches`` batches after the first (worker start-up excluded);
* ``PIL img/CPU-s``, ``ratio`` - for the datasets read lazily from image files (ImageNet): the same files and
  batches through the PIL loader this project used before torchvision's decoders (:class:`PilReference`, kept
  here), timed right after the current loader's ``img/CPU-s`` (which is then re-timed beside it), and the ratio;
* ``img/CPU-s`` - with no worker, images per CPU-second of the process (``time.process_time``): what one idle
  core delivers, a figure that does not move with the machine's load as the wall-clock ones do; ``workers/H200``
  is ``ceil(2,151 / img/CPU-s)``, the workers (one core each) that keep up with the H200's NEO-KD CIFAR-10 rate;
* with ``--train-step``: the shared trainer's images/s on this machine for the dataset's paper preset (NEO-KD,
  PGD-7 max-average, ``neokd_bench.reproduce.cost.time_training``; on a CPU at a batch cut to keep one step
  short), beside the recorded H200 figure for NEO-KD CIFAR-10 (``H200_CIFAR10``, this README).

The workers a GPU needs: ceil(GPU images/s / images per CPU-second of one worker), one core per worker.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASETS = ("cifar10", "cifar100", "tiny-imagenet", "imagenet", "mnist")
H200_CIFAR10 = 2151.0  # images/s, one NEO-KD CIFAR-10 epoch on an H200 (benchmarks/README.md)


def write(name: str, root: Path, scale: int) -> int:
    from neokd_bench.data import synthetic as s

    if name == "cifar10":
        s.write_cifar(root, n_train=100 * scale, n_test=20 * scale)
    elif name == "cifar100":
        s.write_cifar(root, hundred=True, n_train=100 * scale, n_test=20 * scale)
    elif name == "tiny-imagenet":
        s.write_tiny_imagenet(root, classes=10, per_class=10 * scale, n_val=20 * scale)
    elif name == "imagenet":
        s.write_imagenet(root, classes=4, per_class=5 * scale, val_per_class=scale)
    else:
        s.write_mnist(root, n_train=100 * scale, n_test=20 * scale)
    return sum(1 for p in root.rglob("*") if p.is_file())


def one(name: str, root: str, workers: list[int], batch: int, batches: int, val_size: int) -> dict:
    """In the child: load, then time the loader per worker count."""
    import neokd_bench as nb
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    t = time.perf_counter()
    bundle = nb.load_dataset(name, root=root, val_size=val_size)
    start = time.perf_counter() - t
    out = {"dataset": name, "train_images": len(bundle.train), "start_s": start, "img_s": {}}
    for w in workers:
        loader = DataLoader(bundle.train, batch_size=batch, shuffle=True, num_workers=w,
                            generator=torch.Generator().manual_seed(0))
        it = iter(loader)
        next(it)  # workers started, first batch made
        n, t, c = 0, time.perf_counter(), time.process_time()
        for _ in range(batches):
            try:
                x, _ = next(it)
            except StopIteration:
                it = iter(loader)
                x, _ = next(it)
            n += len(x)
        out["img_s"][str(w)] = n / (time.perf_counter() - t)
        if w == 0:  # images per CPU-second of the one process doing all the work: what one idle core delivers
            out["img_cpu_s"] = n / max(time.process_time() - c, 1e-9)
        del it, loader
    if hasattr(bundle.train, "paths"):  # read lazily from image files: the PIL reference, same files and batches
        out["pil_img_cpu_s"] = cpu_rate(PilReference(bundle.train.paths), batch, batches)
        out["img_cpu_s"] = cpu_rate(bundle.train, batch, batches)  # again, right beside it (load drift)
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


class PilReference:
    """The loader before torchvision's decoders (kept here as the reference): PIL open and convert,
    RandomResizedCrop(224) and flip on the PIL image, then uint8 to float."""

    def __init__(self, paths):
        from torchvision import transforms

        self.paths = list(paths)
        self.tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        import numpy as np
        import torch
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            im = self.tf(im.convert("RGB"))
        return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0), 0


def cpu_rate(dataset, batch: int, batches: int) -> float:
    """Images per CPU-second of ``batches`` batches of ``dataset`` through a worker-less DataLoader."""
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(1))
    n, c = 0, time.process_time()
    while n < batch * batches:
        for x, _ in loader:
            n += len(x)
            if n >= batch * batches:
                break
    return n / max(time.process_time() - c, 1e-9)


def train_step(name: str) -> float:
    import neokd_bench as nb
    from neokd_bench.flops import full_forward_flops
    from neokd_bench.presets import train_preset
    from neokd_bench.reproduce.cost import MAX_STEP_FLOPS, NUM_CLASSES, time_training
    from neokd_bench.reproduce.grids import Grid

    preset = train_preset(name, "paper")
    model = nb.create_model(preset.model, num_classes=NUM_CLASSES[name], **dict(preset.model_kwargs))
    batch = max(2, min(preset.batch_size, int(MAX_STEP_FLOPS // (full_forward_flops(model) * 60))))
    grid = Grid("bench", "bench", name, ("neokd",), ())
    return time_training(grid, preset, model, "cpu", batch)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--workers", default=",".join(str(w) for w in range((os.cpu_count() or 1) + 1)))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--scale", type=int, default=10, help="size of the synthetic copies (x100 images for CIFAR)")
    ap.add_argument("--train-step", action="store_true", help="also time the trainer for each dataset's preset")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    if args.child:
        name, root, val_size = json.loads(args.child)
        print(json.dumps(one(name, root, workers, args.batch, args.batches, val_size)))
        return
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    print(f"machine: {cpu}, {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.1f}; "
          f"batch {args.batch}, {args.batches} timed batches")
    head = f"{'dataset':14} {'train imgs':>10} {'write s':>8} {'start s':>8} {'peak MB':>8} " + \
        " ".join(f"{'w=' + str(w) + ' img/s':>12}" for w in workers) + \
        f" {'img/CPU-s':>10} {'PIL img/CPU-s':>13} {'ratio':>6} {'workers/H200':>12}"
    if args.train_step:
        head += f" {'train img/s':>12}"
    print(head)
    with tempfile.TemporaryDirectory(prefix="neokd-bench-data-") as tmp:
        for name in args.datasets.split(","):
            root = Path(tmp) / name
            t = time.perf_counter()
            write(name, root, args.scale)
            wrote = time.perf_counter() - t
            val_size = {"imagenet": args.scale, "tiny-imagenet": 10 * args.scale}.get(name, 10 * args.scale)
            child = subprocess.run([sys.executable, __file__, "--child", json.dumps([name, str(root), val_size]),
                                    "--workers", args.workers, "--batch", str(args.batch),
                                    "--batches", str(args.batches)], check=True, capture_output=True, text=True)
            r = json.loads(child.stdout.strip().splitlines()[-1])
            line = f"{name:14} {r['train_images']:>10} {wrote:>8.1f} {r['start_s']:>8.2f} {r['peak_mb']:>8.0f} " + \
                " ".join(f"{r['img_s'][str(w)]:>12.0f}" for w in workers)
            cpu_rate = r.get("img_cpu_s")
            need = math.ceil(H200_CIFAR10 / cpu_rate) if cpu_rate else "-"
            pil = r.get("pil_img_cpu_s")
            line += f" {cpu_rate or 0:>10.0f} "
            line += f"{pil:>13.0f} {cpu_rate / pil:>5.2f}x" if pil else f"{'-':>13} {'-':>6}"
            line += f" {need:>12}"
            if args.train_step:
                line += f" {train_step(name):>12.1f}"
            print(line, flush=True)
    print(f"recorded H200 figure: {H200_CIFAR10:.0f} img/s (NEO-KD CIFAR-10, one GPU, benchmarks/README.md)")


if __name__ == "__main__":
    main()
