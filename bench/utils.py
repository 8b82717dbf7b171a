"""Small shared helpers: atomic file writes, stale temporary files, and output paths checked before work.

Temporary files are named ``.<name>.<random>.tmp`` beside their target; :func:`remove_stale_temp_files`
removes what a killed process left of them. Files are created with mode ``0o666`` minus the umask, as
``open()`` would, not ``0o600``; after the rename the folder is fsynced, so the new name survives a crash.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UsageError

_TMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8,16}\.tmp$")  # ours, and tempfile.mkstemp's of older versions


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temp(path: Path) -> tuple[int, Path]:
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write through a temporary file in the same folder, fsync, ``os.replace``, fsync the folder: a crash
    never leaves half a file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch  # here, not at import: the result and leaderboard layers use this module without torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (a checkpoint's identity in result files and the gate)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (no Python hash randomization)."""
    h = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` left in ``folder`` when its process was killed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        if _TMP_RE.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists() and not p.is_symlink():
        if p.parent == p:
            break
        p = p.parent
    return p


def _probe_writable(folder: Path, flag: str, path: Path) -> None:
    """Create and remove a probe file: the one test of writability that also holds for root."""
    try:
        fd, tmp = _create_temp(folder / "write-probe")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write in {folder} ({exc.strerror}); "
                         f"choose a writable path with {flag}") from exc


def _check_folder(path: Path, folder: Path, flag: str, kind: str) -> None:
    anc = _existing_ancestor(folder)
    if not anc.is_dir():
        where = "is a file" if anc == path else f"lies under {anc}, which is a file"
        raise UsageError(f"{flag} {path} {where}; give a {kind} path with {flag}")
    _probe_writable(anc, flag, path)


def check_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` can be a folder we write into: not a file, not under a file, writable. Nothing is created."""
    path = Path(path)
    _check_folder(path, path, flag, "folder")
    return path


def check_output_file(path: str | Path, flag: str = "--out") -> Path:
    """``path`` can be (re)written as a file: not a folder, not under a file, in a writable folder."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file path with {flag}, e.g. {flag} {path / 'out'}")
    if path.exists() and not path.is_file():
        raise UsageError(f"{flag} {path} is not a regular file; give a file path with {flag}")
    _check_folder(path, path.parent, flag, "file")
    return path
