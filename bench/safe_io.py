"""Reading a file a user hands us (result files, gate files, Slurm configs, reported numbers), bounded.

Standard library only (no torch): every command that reads a user's JSON or TOML goes through here, so none
of them can hang, run out of memory or end in a traceback because of what the file holds.

* regular files only: a fifo, a device (``/dev/zero``), a socket or a folder is refused in one line before
  anything is read (the file is opened with ``O_NONBLOCK`` and checked again with ``fstat``, so a path
  swapped for a fifo in between cannot block either);
* a size limit (:data:`MAX_BYTES`, checked on the file's size before reading, and while reading);
* UTF-8 only, a decoding error named with its byte offset;
* JSON: a nesting limit (:data:`MAX_DEPTH`, counted before parsing, so no ``RecursionError``) and an
  integer digit limit (:data:`MAX_INT_DIGITS`, so no ``ValueError`` from Python's int conversion limit);
* TOML: the same nesting and digit limits.

Every refusal is an :class:`InputFileError` (a :class:`~neokd_bench.errors.UsageError`: one line, exit 2) whose
message starts with what the file is (``--slurm-config x.toml``, ``result file r.json``).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from .errors import UsageError

#: Largest file read (bytes). The largest result file of the project is under 100 kB.
MAX_BYTES = 32 * 1024 * 1024
#: Deepest nesting of arrays and objects (tables) accepted. A result file nests 7 levels.
MAX_DEPTH = 64
#: Most digits of an integer literal. Seeds (below 2**63) have at most 19.
MAX_INT_DIGITS = 64

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a fifo"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_TOML_STRING = re.compile(r'"""(?:[^\\]|\\.)*?"""|\'\'\'.*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'', re.DOTALL)
_TOML_COMMENT = re.compile(r"#[^\n]*")


class InputFileError(UsageError):
    """A user's file cannot be read safely; the message is one line naming the file."""


class NotJSONError(InputFileError):
    """The text is not JSON at all (truncated, corrupt); the bounds themselves raise :class:`InputFileError`."""


def _label(what: str, path: Path | str) -> str:
    return f"{what} {path}" if what else str(path)


def kind_of(mode: int) -> str:
    """``"a fifo"``, ``"a folder"``, ... for a ``st_mode`` that is not a regular file."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` exists and is a regular file (a symlink to one is fine); else one line naming what it is."""
    path = Path(path)
    name = _label(what, path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputFileError(f"{name} not found; check the path") from None
    except OSError as exc:
        raise InputFileError(f"{name} cannot be read ({exc.strerror}); check the path") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(f"{name} is {kind_of(st.st_mode)}, not a regular file; pass a regular file")
    return path


def read_bytes(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; anything else is a one-line error."""
    path = check_regular(path, what)
    name = _label(what, path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputFileError(f"{name} cannot be read ({exc.strerror}); check the path") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped since the check above
            raise InputFileError(f"{name} is {kind_of(st.st_mode)}, not a regular file; pass a regular file")
        if st.st_size > max_bytes:
            raise InputFileError(f"{name} is {st.st_size} bytes, above the limit of {max_bytes}; "
                                 f"pass a smaller file")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # grew while being read
                raise InputFileError(f"{name} is above the limit of {max_bytes} bytes; pass a smaller file")
    except OSError as exc:
        raise InputFileError(f"{name} cannot be read ({exc.strerror}); check the path") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_text(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_BYTES) -> str:
    """:func:`read_bytes` decoded as UTF-8; a binary file is one line naming the first bad byte."""
    data = read_bytes(path, what, max_bytes)
    name = _label(what, path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{name} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                             f"{exc.start}); pass a text file") from None


def _too_deep(brackets: str, max_depth: int) -> bool:
    depth = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def _int_hook(source: str, max_digits: int):
    def parse(text: str) -> int:
        if len(text.lstrip("-")) > max_digits:
            raise InputFileError(f"{source}: an integer of {len(text.lstrip('-'))} digits, above the limit of "
                                 f"{max_digits}; write a smaller number")
        return int(text)

    return parse


def loads_json(text: str, source: str = "input", max_depth: int = MAX_DEPTH,
               max_int_digits: int = MAX_INT_DIGITS) -> Any:
    """Parse JSON text with bounded nesting and integer size; ``source`` names it in the one-line errors."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if _too_deep(brackets, max_depth):
        raise InputFileError(f"{source}: nested deeper than {max_depth} levels, more than any input of neokd-bench")
    try:
        return json.loads(text, parse_int=_int_hook(source, max_int_digits))
    except json.JSONDecodeError as exc:
        raise NotJSONError(f"{source}: not JSON, truncated or corrupt ({exc.msg} at line {exc.lineno}, "
                             f"column {exc.colno})") from None
    except RecursionError:  # cannot happen below MAX_DEPTH; kept so that a lowered recursion limit is one line
        raise InputFileError(f"{source}: nested too deeply for any input of neokd-bench") from None
    except ValueError as exc:
        raise InputFileError(f"{source}: not JSON ({' '.join(str(exc).split())})") from None


def load_json(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_BYTES,
              max_depth: int = MAX_DEPTH, max_int_digits: int = MAX_INT_DIGITS) -> Any:
    """A regular UTF-8 JSON file of bounded size, nesting and integer length (:func:`read_text`,
    :func:`loads_json`)."""
    return loads_json(read_text(path, what, max_bytes), _label(what, path), max_depth, max_int_digits)


def loads_toml(text: str, source: str = "input", max_depth: int = MAX_DEPTH,
               max_int_digits: int = MAX_INT_DIGITS) -> dict[str, Any]:
    """Parse TOML text with bounded nesting and integer size (Python 3.11's ``tomllib``)."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        raise InputFileError(f"{source}: reading TOML needs Python 3.11; write the same keys as a .json "
                             f"file") from None
    bare = _TOML_COMMENT.sub("", _TOML_STRING.sub('""', text))
    if _too_deep(_NOT_BRACKET.sub("", bare.replace("[[", "[").replace("]]", "]")), max_depth):
        raise InputFileError(f"{source}: nested deeper than {max_depth} levels, more than any input of neokd-bench")
    if re.search(rf"\d[\d_]{{{max_int_digits},}}", bare):
        raise InputFileError(f"{source}: a number of more than {max_int_digits} digits; write a smaller number")
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise InputFileError(f"{source}: nested too deeply for any input of neokd-bench") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError is one
        raise InputFileError(f"{source}: not valid TOML ({' '.join(str(exc).split())})") from None


def load_toml(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_BYTES,
              max_depth: int = MAX_DEPTH, max_int_digits: int = MAX_INT_DIGITS) -> dict[str, Any]:
    """A regular UTF-8 TOML file of bounded size, nesting and integer length."""
    return loads_toml(read_text(path, what, max_bytes), _label(what, path), max_depth, max_int_digits)
