"""Atomic writes (umask, folder fsync, no stray temporary file), stale temporary files, output paths."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from neokd_bench.errors import UsageError
from neokd_bench.utils import atomic_write_text, check_output_dir, check_output_file, remove_stale_temp_files


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_atomic_write_respects_the_umask(tmp_path, umask_022):
    p = atomic_write_text(tmp_path / "r.json", "{}")
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    os.umask(0o077)
    q = atomic_write_text(tmp_path / "s.json", "{}")
    assert stat.S_IMODE(q.stat().st_mode) == 0o600


def test_atomic_write_fsyncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    synced: list[bool] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write_text(tmp_path / "a.txt", "x")
    assert synced == [False, True]  # the file, then its folder
    assert [f.name for f in tmp_path.iterdir()] == ["a.txt"]


def test_failed_write_leaves_no_temporary_file(tmp_path):
    from neokd_bench.utils import atomic_write

    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "c.pt", boom)
    assert list(tmp_path.iterdir()) == []


def test_stale_temporary_files_are_removed_and_nothing_else(tmp_path):
    stale = [tmp_path / ".checkpoint.pt.0123456789abcdef.tmp", tmp_path / ".checkpoint.pt.k2j_x9aq.tmp",
             tmp_path / ".result.json.fedcba9876543210.tmp"]
    keep = [tmp_path / "checkpoint.pt", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for p in stale + keep:
        p.write_bytes(b"x")
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(keep)


def test_output_paths_are_checked_without_creating_anything(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        check_output_dir(f)
    with pytest.raises(UsageError, match="lies under .*which is a file"):
        check_output_dir(f / "run")
    with pytest.raises(UsageError, match="lies under .*which is a file"):
        check_output_file(f / "r.json", "--json")
    with pytest.raises(UsageError, match="is a folder"):
        check_output_file(tmp_path, "--plot")
    check_output_dir(tmp_path / "a" / "b")
    check_output_file(tmp_path / "c" / "r.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_unwritable_output_is_refused(tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits; /proc takes no new file from anyone
        target = Path("/proc/neokd-bench-run")
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        target = tmp_path / "ro" / "run"
    with pytest.raises(UsageError, match="cannot write in"):
        check_output_dir(target)
