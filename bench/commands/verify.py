"""`neokd-bench verify RESULT --checkpoint PATH_OR_URL`: evaluate a result's checkpoint again and say whether its
numbers came from those weights.

1. The checkpoint (a path, ``file://`` or ``https://`` URL) must have the sha256 the result records
   (``training.checkpoint_sha256``); anything else is refused before any work.
2. The result's recorded evaluation is run again: the same dataset and split, attacks with their recorded
   configurations and seeds, test samples, batch size and (when the result records it) thread count; only the
   per-exit metric (``anytime``) is re-run, because the per-exit numbers are what is compared.
3. Every per-exit number (clean top-1/top-5 and, per attack and attack seed, adversarial top-1/top-5) must agree
   within one test sample, ``1/n``: the evaluation is deterministic up to float rounding, which can flip a
   sample sitting on a decision boundary between machines or thread counts, and nothing more.
4. Agreement writes a verification record beside the result (``<stem>.verified.json``, read by the board, see
   ``neokd_bench.leaderboard.verified``); a disagreement prints one line per number and exits 1, writing nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError, check

DOWNLOAD_LIMIT = 4 << 30  # bytes; a larger download is refused (--max-bytes)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("verify", help="re-run a result's evaluation on its checkpoint; mark it verified")
    p.add_argument("result", metavar="RESULT", help="a result JSON written by `neokd-bench run` or `eval`")
    p.add_argument("--checkpoint", required=True, metavar="PATH_OR_URL",
                   help="the checkpoint the result was made from: a path, file:///... or https://...")
    p.add_argument("--data-root", help="folder holding the dataset (default: where the result says)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda[:N] or auto")
    p.add_argument("--threads", type=int, help="torch threads (default: the result's, else this machine's)")
    p.add_argument("--out", help="verification record path (default: <result stem>.verified.json beside it)")
    p.add_argument("--max-bytes", type=int, default=DOWNLOAD_LIMIT, help="largest https download accepted")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_verify)


@contextlib.contextmanager
def local_checkpoint(source: str, max_bytes: int = DOWNLOAD_LIMIT) -> Iterator[Path]:
    """A local path holding the checkpoint at ``source``: the path itself, a ``file://`` URL's path, or an
    ``https://`` download into a temporary file (removed afterwards), at most ``max_bytes``."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "file":
        check(parsed.netloc in ("", "localhost"), f"--checkpoint {source}: a file:// URL names a local file; "
                                                  f"write file:///absolute/path")
        yield Path(urllib.request.url2pathname(parsed.path))
        return
    if parsed.scheme in ("http", "ftp"):
        raise UsageError(f"--checkpoint {source}: only https:// downloads are accepted; use the https:// address")
    if parsed.scheme != "https":
        yield Path(source)
        return
    fd, tmp = tempfile.mkstemp(prefix="neokd-verify-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as fh, urllib.request.urlopen(source, timeout=60) as resp:  # noqa: S310 (https)
            got = 0
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                got += len(chunk)
                if got > max_bytes:
                    raise UsageError(f"--checkpoint {source} is larger than {max_bytes} bytes; pass --max-bytes "
                                     f"to accept more")
                fh.write(chunk)
        yield Path(tmp)
    except OSError as exc:  # urllib's URLError is an OSError
        raise UsageError(f"--checkpoint {source}: download failed ({type(exc).__name__}: "
                         f"{getattr(exc, 'reason', exc)}); check the address or download it and pass the path") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _protocol(doc: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The recorded EvalProtocol and the evaluate() keywords (batch size, attacks) of a result."""
    from ..presets import EvalProtocol

    recorded = dict(doc["evaluation"].get("protocol") or {})
    fields = {f.name for f in dataclasses.fields(EvalProtocol)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in recorded.items() if k in fields}
    kw["metrics"] = ("anytime",)
    proto = dataclasses.replace(EvalProtocol(), **kw)
    attacks = [{"name": a["name"], "label": label, "seeds": list(a.get("seeds") or proto.attack_seeds),
                **(a.get("config") or {})} for label, a in (doc["evaluation"].get("attacks") or {}).items()]
    extra = {"batch_size": int(recorded.get("batch_size") or 256), "attacks": attacks or None}
    if "ensemble" in recorded:
        extra["ensemble"] = bool(recorded["ensemble"])
    return proto, extra


def _numbers(anytime: dict[str, Any]) -> dict[str, list[float]]:
    """Every per-exit number of an anytime section, keyed by a readable name."""
    out: dict[str, list[float]] = {}
    for k in ("top1", "top5"):
        if k in anytime["clean"]:
            out[f"clean {k}"] = list(anytime["clean"][k]["per_exit"])
    for label, adv in sorted(anytime.get("adversarial", {}).items()):
        for k in ("top1", "top5"):
            if k not in adv:
                continue
            for seed, row in zip(adv.get("seeds") or [], adv[k]["per_seed"]):
                out[f"{label} {k} seed {seed}"] = list(row)
    return out


def compare(recorded: dict[str, Any], again: dict[str, Any]) -> tuple[list[str], int, float]:
    """One line per per-exit number that differs by more than one test sample (``1/n``); the count of numbers
    compared and the largest difference."""
    n = int(recorded["n"])
    if int(again["n"]) != n:
        return [f"the result evaluated {n} test samples, the re-run {again['n']}; pass the --data-root of the "
                f"dataset it used"], 0, float("inf")
    tol = 1.0 / n
    want, got = _numbers(recorded), _numbers(again)
    lines, count, worst = [], 0, 0.0
    for name, values in want.items():
        if name not in got:
            lines.append(f"{name}: in the result, not produced by the re-run")
            continue
        for k, (a, b) in enumerate(zip(values, got[name])):
            count += 1
            worst = max(worst, abs(a - b))
            if abs(a - b) > tol + 1e-12:
                lines.append(f"{name} exit {k + 1}: the result says {a:.4f}, the checkpoint gives {b:.4f} "
                             f"(differs by {abs(a - b):.4f}, more than one sample of {n})")
    return lines, count, worst


def run_verify(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation import evaluate
    from ..leaderboard.verified import RECORD_KIND, record_path, sha256_bytes
    from ..results import load_result, provenance
    from ..trainer import load_checkpoint, model_from_checkpoint, resolve_device
    from ..utils import atomic_write_text, check_output_file, file_sha256

    check(args.threads is None or args.threads >= 1, f"--threads must be at least 1, got {args.threads}")
    result_path = Path(args.result)
    check(result_path.is_file(), f"no result file {result_path}; pass a result JSON written by `neokd-bench run`")
    raw = result_path.read_bytes()
    doc = load_result(result_path)  # validated against its schema
    want = (doc.get("training") or {}).get("checkpoint_sha256")
    check(isinstance(want, str), f"{result_path} records no training.checkpoint_sha256, so no checkpoint can be "
                                 f"matched to it; evaluate the checkpoint with `neokd-bench eval` to make one")
    out = Path(args.out) if args.out else record_path(result_path)
    check_output_file(out, "--out")
    device = resolve_device(args.device)

    with local_checkpoint(args.checkpoint, args.max_bytes) as local:
        check(local.is_file(), f"--checkpoint {args.checkpoint}: no such file")
        got = file_sha256(local)
        if got != want:
            raise UsageError(f"checksum mismatch: {result_path} was made from a checkpoint with sha256 {want}, "
                             f"{args.checkpoint} has {got}; pass the checkpoint this result was made from")
        state = load_checkpoint(local)
    model = model_from_checkpoint(state, args.checkpoint)

    import neokd_bench as nb

    ds = doc["dataset"]
    recorded_source = str(ds.get("source") or "auto")
    source = "auto" if args.data_root else recorded_source.split(":", 1)[0]
    root = args.data_root or (recorded_source.split(":", 1)[1] if recorded_source.startswith("folder:") else None)
    val_size = ds.get("val_size") or (ds.get("sizes") or {}).get("val")
    bundle = nb.load_dataset(ds["name"], root=root, source=source, val_size=val_size,
                             split_seed=int(ds.get("split_seed") or 0))
    sizes = bundle.describe()["sizes"]
    check(sizes == ds.get("sizes", sizes), f"the dataset found has splits {sizes}, the result's had {ds.get('sizes')}; "
                                           f"pass the --data-root of the data the result was evaluated on")
    proto, extra = _protocol(doc)
    threads = args.threads or (doc["evaluation"].get("protocol") or {}).get("threads")
    before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(int(threads))
        again = evaluate(model, bundle, dataset_key=ds["name"], protocol=proto, device=device, metrics=("anytime",),
                         progress=not args.quiet, **extra)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{result_path}: its recorded attacks cannot be rebuilt by this version "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); verify with the "
                         f"neokd-bench version in its provenance") from exc
    finally:
        torch.set_num_threads(before)
    lines, count, worst = compare(doc["evaluation"]["anytime"], again["anytime"])
    if lines:
        for line in lines:
            print(f"disagrees: {line}")
        print(f"{len(lines)} of {count} per-exit numbers disagree; {result_path} stays self-reported")
        return 1
    record = {
        "kind": RECORD_KIND, "agrees": True, "result": result_path.name, "result_sha256": sha256_bytes(raw),
        "checkpoint_sha256": got, "checkpoint_source": args.checkpoint, "n": int(doc["evaluation"]["anytime"]["n"]),
        "numbers_compared": count, "max_abs_diff": worst, "tolerance": 1.0 / int(doc["evaluation"]["anytime"]["n"]),
        "metrics_rerun": ["anytime"], "threads": int(threads or torch.get_num_threads()), "device": str(device),
        "verified_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance(device),
    }
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"verified: {count} per-exit numbers agree within one sample of {record['n']} (largest difference "
          f"{worst:.4f}); record: {out}")
    return 0
