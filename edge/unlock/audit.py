"""The audit log: one JSON object per line for every unlock decision, never an image.

Each line records the time, the user, the action and decision, the reason, the per-frame match
scores, the liveness result and the ids of the models that decided. Lines are appended with a
single ``write(2)`` on a descriptor opened with ``O_APPEND`` and fsynced, so concurrent writers
never interleave inside a line and earlier lines are never rewritten. If a crash left the last
line without its newline, the next entry starts on a new line instead of gluing onto it.

Example:
    >>> log = AuditLog("/var/log/edgesight/audit.jsonl")  # doctest: +SKIP
    >>> log.append(AuditEvent("verify", "alice", "accept", reason="match", scores=(0.71,)))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge.unlock.fsutil import ensure_dir

__all__ = ["AuditEvent", "AuditLog", "read_audit", "MAX_ARRAY_ITEMS"]

#: Largest numeric array accepted in an entry. Anything bigger (an embedding, an image) is
#: refused: the log must never hold biometric data.
MAX_ARRAY_ITEMS = 64
_LOG_MODE = 0o600


@dataclass(frozen=True)
class AuditEvent:
    """One decision.

    Attributes:
        action: ``verify``, ``enroll``, ``remove``, ``rename``, ``import``, ``export``.
        user: the user concerned (``""`` for an identification without a claimed user).
        decision: ``accept``, ``reject``, ``timeout``, ``locked_out``, ``refused``, ``error``,
            ``enrolled``, ``removed`` …
        reason: a short machine-readable reason (``match``, ``no_match``, ``liveness``, ``ssh`` …).
        scores: per-frame cosine similarities.
        liveness: per-frame liveness scores/decisions, or a summary dict.
        models: model ids (and sha256) that took part, by role.
        extra: anything else small and JSON-serialisable (thresholds, timings, flags).
    """

    action: str
    user: str
    decision: str
    reason: str = ""
    scores: tuple = ()
    liveness: Any = None
    models: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


def _plain(value: Any, where: str) -> Any:
    """JSON-safe copy of ``value``; refuses bytes and large arrays (images, embeddings)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"audit entry field {where} holds raw bytes; the audit log stores no images")
    if isinstance(value, np.ndarray):
        if value.size > MAX_ARRAY_ITEMS or value.ndim > 1:
            raise TypeError(f"audit entry field {where} holds an array of shape {value.shape}; "
                            f"the audit log stores no images or embeddings")
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_ARRAY_ITEMS and all(isinstance(v, (int, float)) for v in value):
            raise TypeError(f"audit entry field {where} holds {len(value)} numbers; "
                            f"the audit log stores no embeddings")
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"audit entry field {where} has unsupported type {type(value).__name__}")


class AuditLog:
    """Append-only JSONL audit log.

    Args:
        path: the log file (created with mode 0600; its directory with 0700).
        clock: returns epoch seconds (injectable for tests).
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock

    def entry(self, event: AuditEvent) -> dict:
        """The dict written for ``event`` (also returned by :meth:`append`)."""
        now = self.clock()
        return {
            "time": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds"),
            "epoch": round(now, 3), "pid": os.getpid(),
            "action": event.action, "user": event.user, "decision": event.decision,
            "reason": event.reason,
            "scores": _plain(list(event.scores), "scores"),
            "liveness": _plain(event.liveness, "liveness"),
            "models": _plain(dict(event.models), "models"),
            **{k: _plain(v, k) for k, v in event.extra.items()},
        }

    def append(self, event: AuditEvent) -> dict:
        """Append one line for ``event`` and fsync it.

        Raises:
            TypeError: the event carries bytes or a large array (no images in the log).
            OSError: the log cannot be written (the caller decides; verify treats it as an error).
        """
        record = self.entry(event)
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        ensure_dir(self.path.parent)
        # O_RDWR only so the last byte can be checked; O_APPEND makes every write go to the end.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), _LOG_MODE)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return record


def read_audit(path: str | Path) -> list[dict]:
    """Parse every complete line of an audit log (a torn last line is skipped)."""
    out = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        if raw.strip():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return out
