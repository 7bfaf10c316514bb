"""Lockout after repeated failures, with exponential back-off, persisted across restarts.

After :attr:`LockoutPolicy.max_failures` consecutive failures (5) a user is locked out for
``base_delay_s`` (30 s); every further failure after a lock expires doubles the delay (30, 60,
120, … capped at ``max_delay_s``). A success resets the count. The state lives in one JSON file
(``STATE_DIR/lockout.json``) written atomically under an ``flock``, so two verifications at once
(a sudo in two terminals) cannot lose each other's failures, and a restart or reboot does not
forgive anything. Times are wall-clock epoch seconds (a monotonic clock restarts at boot); the
clock is injectable for tests.

Example:
    >>> tracker = LockoutTracker("/var/lib/edgesight/state")  # doctest: +SKIP
    >>> tracker.check("alice").locked  # doctest: +SKIP
    False
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge.errors import LockedOutError, TemplateStoreError
from edge.unlock.fsutil import atomic_write, ensure_dir

__all__ = ["LockoutPolicy", "LockStatus", "LockoutTracker", "STATE_FILE"]

#: Name of the state file inside the state directory.
STATE_FILE = "lockout.json"
_LOCK_FILE = ".lockout.lock"


@dataclass(frozen=True)
class LockoutPolicy:
    """When to lock and for how long.

    Attributes:
        max_failures: consecutive failures that trigger the first lock.
        base_delay_s: length of the first lock; each later failure doubles it.
        max_delay_s: the longest lock (one day by default).
    """

    max_failures: int = 5
    base_delay_s: float = 30.0
    max_delay_s: float = 86400.0

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.base_delay_s <= 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError(f"invalid lockout policy {self}")

    def delay_for(self, failures: int) -> float:
        """Lock length after ``failures`` consecutive failures (0 below the threshold)."""
        if failures < self.max_failures:
            return 0.0
        doublings = min(failures - self.max_failures, 64)  # 2**64 × 30 s overflows nothing
        return min(self.base_delay_s * 2.0 ** doublings, self.max_delay_s)


@dataclass(frozen=True)
class LockStatus:
    """A user's lockout state at one instant."""

    user: str
    failures: int
    locked_until: float
    now: float

    @property
    def locked(self) -> bool:
        return self.now < self.locked_until

    @property
    def remaining_s(self) -> float:
        return max(0.0, self.locked_until - self.now)


class LockoutTracker:
    """Counts consecutive failures per user in ``state_dir/lockout.json``.

    Args:
        state_dir: directory of the state file (created with mode 0700).
        policy: thresholds and delays.
        clock: returns epoch seconds; tests pass a fake.
    """

    def __init__(self, state_dir: str | Path, policy: LockoutPolicy = LockoutPolicy(), *,
                 clock: Callable[[], float] = time.time) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / STATE_FILE
        self.policy = policy
        self.clock = clock

    def _load(self) -> dict:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise TemplateStoreError(f"cannot read lockout state {self.path}: {e.strerror}") from e
        try:
            data = json.loads(raw)
            users = data["users"]
            if not isinstance(users, dict):
                raise TypeError("'users' is not an object")
            return users
        except (ValueError, KeyError, TypeError) as e:
            # Fail closed: a corrupt state file must not reset everyone's failure count.
            raise TemplateStoreError(f"lockout state {self.path} is corrupt ({e}); "
                                     f"inspect it, then delete it to reset all lockouts") from e

    def _save(self, users: dict) -> None:
        atomic_write(self.path, json.dumps({"version": 1, "users": users}, indent=1).encode("utf-8"))

    @contextmanager
    def _locked(self) -> Iterator[dict]:
        ensure_dir(self.state_dir)
        fd = os.open(self.state_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._load()
        finally:
            os.close(fd)  # closing releases the flock

    def _status(self, user: str, entry: dict | None, now: float) -> LockStatus:
        entry = entry or {}
        return LockStatus(user, int(entry.get("failures", 0)), float(entry.get("locked_until", 0.0)), now)

    def check(self, user: str) -> LockStatus:
        """The current status of ``user`` (no change)."""
        with self._locked() as users:
            return self._status(user, users.get(user), self.clock())

    def raise_if_locked(self, user: str) -> LockStatus:
        """Return the status, or raise LockedOutError naming the seconds left."""
        status = self.check(user)
        if status.locked:
            raise LockedOutError(
                f"user {user!r} is locked out for {status.remaining_s:.0f} s more after "
                f"{status.failures} consecutive failures", user=user, until=status.locked_until)
        return status

    def record_failure(self, user: str) -> LockStatus:
        """Count one failure; lock the user when the threshold is reached. Returns the new status."""
        with self._locked() as users:
            now = self.clock()
            failures = int(users.get(user, {}).get("failures", 0)) + 1
            delay = self.policy.delay_for(failures)
            entry = {"failures": failures, "locked_until": now + delay if delay else 0.0,
                     "last_failure": now}
            users[user] = entry
            self._save(users)
            return self._status(user, entry, now)

    def record_success(self, user: str) -> None:
        """Reset the failure count of ``user``."""
        with self._locked() as users:
            if users.pop(user, None) is not None:
                self._save(users)

    def reset(self, user: str) -> None:
        """Administrative reset (same as a success)."""
        self.record_success(user)
