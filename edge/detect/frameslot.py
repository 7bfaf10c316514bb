"""A bounded hand-over between two pipeline stages: latest-frame or every-frame.

Example:
    >>> slot = FrameSlot("latest", 1)
    >>> for i in range(3):
    ...     _ = slot.put(i)
    >>> slot.get(), slot.dropped
    (2, 2)
"""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["FrameSlot", "SLOT_POLICIES"]

SLOT_POLICIES = ("latest", "all")
#: Seconds a blocked ``put`` waits between looks at the closed flag.
PUT_POLL = 0.1


class FrameSlot:
    """A bounded hand-over between two stage threads (capture → prepare → infer → post-process).

    Args:
        policy: ``"latest"``: :meth:`put` never blocks; when full the oldest frame is dropped
            (counted in :attr:`dropped`). ``"all"``: :meth:`put` waits for room.
        capacity: frames held at most.
    """

    def __init__(self, policy: str, capacity: int = 1) -> None:
        if policy not in SLOT_POLICIES or capacity < 1:
            raise ValueError(f"policy must be 'latest' or 'all' and capacity >= 1, got {policy!r}, {capacity}")
        self.policy, self.capacity = policy, capacity
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item) -> bool:
        """Hand over an item. Returns False (item not taken) once the slot is closed."""
        with self._cond:
            if self.policy == "all":
                while len(self._items) >= self.capacity and not self._closed:
                    self._cond.wait(PUT_POLL)
            if self._closed:
                return False
            while len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None):
        """The oldest item; None when closed and empty, or when ``timeout`` passes."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def wait_room(self, timeout: float | None = None) -> bool:
        """Wait until a :meth:`put` would not have to drop or wait (or the slot closes).

        A producer that calls this *before* taking its next input hands over the freshest input
        it can: with the ``latest`` policy it does not prepare a frame only to hold it while the
        consumer is busy.

        Returns:
            True when there is room and the slot is open; False on close or ``timeout``.
        """
        with self._cond:
            if len(self._items) >= self.capacity and not self._closed:
                self._cond.wait(timeout)
            return len(self._items) < self.capacity and not self._closed

    def count_drop(self, n: int = 1) -> None:
        """Count frames dropped outside the slot (e.g. captured after it closed)."""
        with self._cond:
            self.dropped += n

    @property
    def closed(self) -> bool:
        """No more puts will be accepted."""
        return self._closed

    @property
    def finished(self) -> bool:
        """Closed and empty: nothing more will come."""
        return self._closed and not self._items

    def close(self, discard: bool = False) -> None:
        """No more puts. With ``discard`` the items still held are dropped (and counted)."""
        with self._cond:
            self._closed = True
            if discard:
                self.dropped += len(self._items)
                self._items.clear()
            self._cond.notify_all()
