"""Lockout after repeated failures, with exponential back-off, persisted across restarts.

After :attr:`LockoutPolicy.max_failures` consecutive failures (5) a user is locked out for
``base_delay_s`` (30 s); every further failure after a lock expires doubles the delay (30, 60,
120, … capped at ``max_delay_s``). A success resets the count. The state lives in one JSON file
(``STATE_DIR/lockout.json``) written atomically under an ``flock``, so two verifications at once
(a sudo in two terminals) cannot lose each other's failures, and a restart or reboot does not
forgive anything. Times are wall-clock epoch seconds (a monotonic clock restarts at boot); the
clock is injectable for tests.

An attempt is *reserved* when it starts (:meth:`LockoutTracker.begin_attempt`): in one critical
section the lock is checked and the attempt counted as a failure, so N prompts started at once
against a limit of k get exactly k tries. A success then resets the count; an attempt that saw
no face gives its reservation back (:meth:`LockoutTracker.release`).

A state file that cannot be read, is not UTF-8 JSON of the expected shape, or holds absurd values
(NaN, infinities, negative or huge counts, a lock far beyond the longest delay) fails *closed*:
:class:`~edge.errors.LockoutStateError` (a :class:`~edge.errors.LockedOutError`) names the file
and how to reset it (``edge unlock reset``, which moves the bad file aside).

Example:
    >>> tracker = LockoutTracker("/var/lib/edgesight/state")  # doctest: +SKIP
    >>> tracker.check("alice").locked  # doctest: +SKIP
    False
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge.errors import LockedOutError, LockoutStateError, TemplateStoreError
from edge.unlock.fsutil import atomic_write, ensure_dir, exclusive_lock, remove_stale_temps

__all__ = ["LockoutPolicy", "LockStatus", "LockoutTracker", "Reservation", "STATE_FILE"]

#: Name of the state file inside the state directory.
STATE_FILE = "lockout.json"
_LOCK_FILE = ".lockout.lock"
#: More consecutive failures than this in a state file is absurd (fails closed).
_MAX_FAILURES = 10**6


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


@dataclass(frozen=True)
class Reservation:
    """An attempt counted when it started; ``previous_until`` is restored if it is given back."""

    status: LockStatus
    previous_until: float


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

    def _corrupt(self, why: str) -> LockoutStateError:
        return LockoutStateError(
            f"lockout state {self.path} is unreadable or corrupt ({why}): face unlock is locked for "
            f"every user until it is reset; inspect the file, then run `edge unlock reset USER` (it "
            f"moves the file aside and clears all lockouts)", until=math.inf)

    def _load(self) -> dict:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise self._corrupt(f"cannot read it: {e.strerror}") from e
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise self._corrupt(f"not UTF-8 at byte {e.start}") from e
        except ValueError as e:
            raise self._corrupt(f"not JSON: {e}") from e
        users = data.get("users") if isinstance(data, dict) else None
        if not isinstance(users, dict):
            raise self._corrupt("no 'users' object")
        horizon = self.clock() + 10 * self.policy.max_delay_s
        for user, entry in users.items():
            self._check_entry(user, entry, horizon)
        return users

    def _check_entry(self, user: str, entry: object, horizon: float) -> None:
        """Fail closed on anything but a sane entry (NaN compares false, so test what is valid)."""
        if not isinstance(entry, dict):
            raise self._corrupt(f"users.{user} is {type(entry).__name__}, expected an object")
        failures = entry.get("failures", 0)
        if type(failures) is not int or not 0 <= failures <= _MAX_FAILURES:
            raise self._corrupt(f"users.{user}.failures is {failures!r}, expected an integer "
                                f"from 0 to {_MAX_FAILURES}")
        for key in ("locked_until", "last_failure"):
            value = entry.get(key, 0.0)
            if type(value) not in (int, float) or not (math.isfinite(value) and 0 <= value <= horizon):
                raise self._corrupt(f"users.{user}.{key} is {value!r}, expected epoch seconds "
                                    f"no later than now + 10 × the longest lock")

    def _save(self, users: dict) -> None:
        atomic_write(self.path, json.dumps({"version": 1, "users": users}, indent=1).encode("utf-8"))

    @contextmanager
    def _locked(self) -> Iterator[dict]:
        if self.state_dir.exists() and not self.state_dir.is_dir():
            raise TemplateStoreError(f"lockout state directory {self.state_dir} is not a directory "
                                     f"(--state / EDGE_UNLOCK_STATE must name a directory)")
        ensure_dir(self.state_dir)
        with exclusive_lock(self.state_dir / _LOCK_FILE):
            remove_stale_temps(self.state_dir)
            yield self._load()

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

    def begin_attempt(self, user: str) -> Reservation:
        """Check the lock and count this attempt as a failure, in one critical section.

        Raises:
            LockedOutError: the user is locked out (nothing is counted then).
            LockoutStateError: the state file is corrupt (fails closed).
        """
        with self._locked() as users:
            now = self.clock()
            entry = users.get(user) or {}
            status = self._status(user, entry, now)
            if status.locked:
                raise LockedOutError(
                    f"user {user!r} is locked out for {status.remaining_s:.0f} s more after "
                    f"{status.failures} consecutive failures", user=user, until=status.locked_until)
            failures = status.failures + 1
            delay = self.policy.delay_for(failures)
            new = {"failures": failures, "locked_until": now + delay if delay else status.locked_until,
                   "last_failure": now}
            users[user] = new
            self._save(users)
            return Reservation(self._status(user, new, now), status.locked_until)

    def release(self, reservation: Reservation) -> None:
        """Give back a reserved attempt that turned out not to be one (no face was seen)."""
        user = reservation.status.user
        with self._locked() as users:
            entry = users.get(user)
            if not entry:
                return
            entry["failures"] = max(0, int(entry.get("failures", 0)) - 1)
            if entry.get("locked_until") == reservation.status.locked_until:
                entry["locked_until"] = reservation.previous_until
            if entry["failures"] == 0 and entry["locked_until"] <= self.clock():
                users.pop(user)
            self._save(users)

    def reset(self, user: str) -> str | None:
        """Administrative reset (same as a success). A corrupt state file is moved aside
        (every lockout is cleared then); returns the new name of that file, else None."""
        try:
            self.record_success(user)
        except LockoutStateError:
            with exclusive_lock(self.state_dir / _LOCK_FILE):
                aside = self.path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
                os.replace(self.path, aside)
            return str(aside)
        return None
