"""A bounded, ordered, crash-safe queue of payloads on disk (SQLite in WAL mode).

Sinks that deliver over a network append every event here first and remove it only once the
other end acknowledged it, so nothing is lost when the broker or server is away or the process
restarts. Each append and removal is one transaction, made durable with ``fsync`` (SQLite
``synchronous=FULL``). When more than ``limit`` payloads are held, the oldest are dropped and
counted in :attr:`DiskBuffer.dropped`, which persists across restarts.

Example:
    >>> import tempfile, os
    >>> buf = DiskBuffer(os.path.join(tempfile.mkdtemp(), "q.sqlite"), limit=2)
    >>> buf.append([b"a", b"b", b"c"])
    [1, 2, 3]
    >>> [p for _, p in buf.peek(10)], buf.dropped
    ([b'b', b'c'], 1)
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from edge.errors import SinkError

__all__ = ["DiskBuffer", "DEFAULT_BUFFER_LIMIT"]

#: Default number of undelivered events kept per sink.
DEFAULT_BUFFER_LIMIT = 10_000

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS items (seq INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('dropped', 0)",
)


class DiskBuffer:
    """Ordered payload queue in one SQLite file; safe to share between threads.

    Args:
        path: the database file (created with its parent directories).
        limit: most payloads kept; beyond it the oldest are dropped and counted.

    Raises:
        SinkError: the file cannot be created or is not a buffer database.
    """

    def __init__(self, path: str | Path, *, limit: int = DEFAULT_BUFFER_LIMIT) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"buffer limit must be a positive int, got {limit!r}")
        self.path = Path(path)
        self.limit = limit
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._count = self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            self._dropped = self._db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            raise SinkError(f"cannot open event buffer {self.path}: {exc}") from None
        self._closed = False
        if self._count > limit:  # the limit was lowered since the last run
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                self._trim()
                self._db.execute("COMMIT")

    def __len__(self) -> int:
        return self._count

    @property
    def dropped(self) -> int:
        """Payloads dropped because the buffer was full, over the life of the file."""
        return self._dropped

    def _trim(self) -> None:
        over = self._count - self.limit
        if over > 0:
            self._db.execute("DELETE FROM items WHERE seq IN (SELECT seq FROM items ORDER BY seq LIMIT ?)", (over,))
            self._db.execute("UPDATE meta SET value = value + ? WHERE key='dropped'", (over,))
            self._count -= over
            self._dropped += over

    def append(self, payloads: Iterable[bytes | str]) -> list[int]:
        """Add payloads at the tail in one durable transaction.

        Returns:
            Their sequence numbers (increasing, never reused).
        """
        rows = [p.encode("utf-8") if isinstance(p, str) else bytes(p) for p in payloads]
        if not rows:
            return []
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                seqs = [self._db.execute("INSERT INTO items (payload) VALUES (?)", (r,)).lastrowid for r in rows]
                self._count += len(rows)
                self._trim()
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SinkError(f"cannot write event buffer {self.path}: {exc}") from None
        return seqs

    def peek(self, n: int, after: int = 0) -> list[tuple[int, bytes]]:
        """Up to ``n`` oldest ``(seq, payload)`` pairs with ``seq > after``, oldest first."""
        with self._lock:
            self._check_open()
            cur = self._db.execute("SELECT seq, payload FROM items WHERE seq > ? ORDER BY seq LIMIT ?", (after, n))
            return [(int(s), bytes(p)) for s, p in cur.fetchall()]

    def remove(self, seqs: Sequence[int]) -> None:
        """Forget delivered payloads (unknown or already dropped seqs are ignored)."""
        if not seqs:
            return
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                gone = self._db.executemany("DELETE FROM items WHERE seq = ?", [(int(s),) for s in seqs]).rowcount
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SinkError(f"cannot update event buffer {self.path}: {exc}") from None
            self._count -= max(gone, 0)

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _check_open(self) -> None:
        if self._closed:
            raise SinkError(f"event buffer {self.path} is closed")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> "DiskBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DiskBuffer({str(self.path)!r}, held={self._count}, limit={self.limit}, dropped={self._dropped})"
