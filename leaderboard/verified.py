"""Which board entries were verified: reads the verification records `neokd-bench verify` writes beside result
files (no torch; the board never runs a model).

A record ``<result stem>.verified.json`` says that the checkpoint whose sha256 the result names was evaluated
again with the result's recorded protocol and every per-exit number agreed within one test sample. It counts
only while it still describes the files: its ``result_sha256`` must be the sha256 of the result file as it is
now (an edited result loses its mark) and its ``checkpoint_sha256`` the result's ``training.checkpoint_sha256``.
Anything else, including a missing or unreadable record, is "self-reported".
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

RECORD_SUFFIX = ".verified.json"
VERIFIED, SELF_REPORTED = "verified", "self-reported"
RECORD_KIND = "neokd-bench-verification"
RECORD_MAX_BYTES = 1 << 20  # a record is a few kB; a larger file is not one


def record_path(result_path: str | Path) -> Path:
    """Where the verification record of ``result_path`` lives: beside it, ``<stem>.verified.json``."""
    p = Path(result_path)
    return p.with_name(p.stem + RECORD_SUFFIX)


def is_record(path: str | Path) -> bool:
    return Path(path).name.endswith(RECORD_SUFFIX)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def status(result_path: str | Path, doc: dict[str, Any]) -> str:
    """"verified" when a valid record beside ``result_path`` describes this result file and its checkpoint,
    else "self-reported"."""
    rec_path = record_path(result_path)
    try:
        if not rec_path.is_file() or rec_path.stat().st_size > RECORD_MAX_BYTES:
            return SELF_REPORTED
        rec = json.loads(rec_path.read_text(encoding="utf-8"))
        result_sha = sha256_bytes(Path(result_path).read_bytes())
    except (OSError, ValueError):
        return SELF_REPORTED
    ckpt = (doc.get("training") or {}).get("checkpoint_sha256")
    ok = (isinstance(rec, dict) and rec.get("kind") == RECORD_KIND and rec.get("agrees") is True
          and rec.get("result_sha256") == result_sha and isinstance(ckpt, str) and rec.get("checkpoint_sha256") == ckpt)
    return VERIFIED if ok else SELF_REPORTED
