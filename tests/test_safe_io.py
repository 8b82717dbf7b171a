"""The bounded reader of user files (``neokd_bench.safe_io``): each limit refuses in one line just past it and
accepts at it, nothing that is not a regular file is opened, and importing it does not import torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from neokd_bench import safe_io
from neokd_bench.errors import UsageError
from neokd_bench.safe_io import InputFileError, load_json, load_toml, loads_json, loads_toml, read_text


def test_import_is_torch_free():
    code = "import sys, neokd_bench.safe_io; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and isinstance(exc.value, UsageError)
    return msg


@pytest.mark.parametrize("depth", [safe_io.MAX_DEPTH, safe_io.MAX_DEPTH + 1, 200_000])
def test_json_depth_limit(depth):
    text = "[" * depth + "]" * depth
    if depth <= safe_io.MAX_DEPTH:
        assert loads_json(text) is not None
    else:
        with pytest.raises(InputFileError) as exc:
            loads_json(text, "x.json")
        assert "nested deeper than" in _one_line(exc)


def test_brackets_inside_strings_do_not_count():
    text = json.dumps({"a": "[" * 1000, "b": ['\\"[' * 100]})
    assert loads_json(text)["a"] == "[" * 1000


@pytest.mark.parametrize("digits", [safe_io.MAX_INT_DIGITS, safe_io.MAX_INT_DIGITS + 1, 5000])
def test_json_integer_digit_limit(digits):
    text = '{"n": -' + "9" * digits + "}"
    if digits <= safe_io.MAX_INT_DIGITS:
        assert loads_json(text)["n"] == -int("9" * digits)
    else:
        with pytest.raises(InputFileError) as exc:
            loads_json(text, "x.json")
        assert f"an integer of {digits} digits" in _one_line(exc)


@pytest.mark.parametrize("text, needle", [('{"a": ', "truncated"), ("", "truncated"), ("{'a': 1}", "truncated"),
                                          ("\ufeff{}", "not JSON")])
def test_json_errors_are_one_line(text, needle):
    with pytest.raises(InputFileError) as exc:
        loads_json(text, "x.json")
    assert needle in _one_line(exc)


def test_size_limit_is_checked_before_reading(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as fh:
        fh.truncate(1001)
    with pytest.raises(InputFileError) as exc:
        read_text(path, "result file", max_bytes=1000)
    assert "1001 bytes, above the limit of 1000" in _one_line(exc)
    path.write_text("[" + " " * 998 + "]")
    assert load_json(path, max_bytes=1000) == []


def test_not_utf8(tmp_path):
    path = tmp_path / "b.json"
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(InputFileError) as exc:
        load_json(path, "result file")
    assert "not UTF-8 text (byte 0xff at offset 7)" in _one_line(exc)


@pytest.mark.parametrize("kind", ["fifo", "folder", "device", "missing", "link-to-fifo"])
def test_only_regular_files_are_opened(kind, tmp_path):
    path = tmp_path / "x.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "device":
        path = "/dev/zero"
    elif kind == "link-to-fifo":
        os.mkfifo(tmp_path / "f")
        path.symlink_to(tmp_path / "f")
    with pytest.raises(InputFileError) as exc:  # a fifo would block forever if opened for reading
        load_json(path, "result file")
    msg = _one_line(exc)
    assert ("not found" if kind == "missing" else "not a regular file") in msg and str(path) in msg


def test_link_to_a_regular_file_is_read(tmp_path):
    (tmp_path / "real.json").write_text('{"a": 1}')
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    assert load_json(tmp_path / "link.json") == {"a": 1}


@pytest.mark.parametrize("text, needle", [
    ("a = " + "[" * 5000 + "]" * 5000, "nested deeper than"), ("a = " + "1" * 5000, "more than 64 digits"),
    ("a = ", "not valid TOML"), ("a = {" * 3000, "nested deeper than"),
])
def test_toml_limits(text, needle):
    with pytest.raises(InputFileError) as exc:
        loads_toml(text, "s.toml")
    assert needle in _one_line(exc)


def test_toml_strings_and_comments_do_not_count(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[slurm]\npartition = "[[[[ 99999999999999999999999999999999999999999999999999999999999999999"\n'
                    "# [[[[[[[[ " + "9" * 100 + "\nx = [[1], [2]]\n")
    doc = load_toml(path, "--slurm-config")
    assert doc["slurm"]["x"] == [[1], [2]] and doc["slurm"]["partition"].startswith("[[[[")
