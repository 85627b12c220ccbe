"""Replies and observed failures waiting for the engine, at most one per task key, and the
upload slots that bound what the coordinator holds.

An update holds its slot from the moment its push is admitted (before its first chunk)
until the engine takes it from this queue, or its task is cancelled: with ``max_uploads``
slots the coordinator never holds more than that many updates, streaming or waiting, so its
memory is O(model x uploads in flight) however many clients push at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import suppress

from phalanx.core.messages import Event, TaskKey
from phalanx.engine.clock import Clock
from phalanx.errors import BusyError, DuplicateError
from phalanx.types import ClientId

SLACK_S = 1e-3  # a timer may wake this early; the wait goes on until ``until`` has passed


class UploadSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: set[TaskKey] = set()

    def take(self, key: TaskKey) -> None:
        if key in self._held:
            raise DuplicateError(
                f"task (round {key.round}, client {key.client}, attempt {key.attempt}): "
                "its update is already being received"
            )
        if len(self._held) >= self.limit:
            raise BusyError(
                f"{len(self._held)} updates in flight, the most this coordinator holds "
                f"({self.limit}); push again shortly"
            )
        self._held.add(key)

    def release(self, key: TaskKey) -> None:
        self._held.discard(key)

    @property
    def in_flight(self) -> int:
        return len(self._held)


class EventQueue:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._order: deque[TaskKey] = deque()
        self._events: dict[TaskKey, Event] = {}
        self._ready = asyncio.Event()

    def put(self, event: Event) -> bool:
        """Queue ``event``; False if one for its key is already waiting (absorbed)."""
        if event.key in self._events:
            return False
        self._events[event.key] = event
        self._order.append(event.key)
        self._ready.set()
        return True

    def drop(self, key: TaskKey) -> Event | None:
        return self._events.pop(key, None)

    def holds_client(self, client: ClientId) -> bool:
        return any(key.client == client for key in self._events)

    async def get(self, until: float) -> Event | None:
        """The next event, or None once ``until`` has passed on the clock (never early)."""
        for _ in range(1_000_000):  # each turn takes an event, skips a dropped key or waits
            while self._order:
                event = self._events.pop(self._order.popleft(), None)
                if event is not None:
                    return event
            remaining = until - self._clock.now()
            if remaining <= 0:
                return None
            self._ready.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), remaining + SLACK_S)
        return None

    def clear(self) -> list[Event]:
        events = list(self._events.values())
        self._events.clear()
        self._order.clear()
        return events
