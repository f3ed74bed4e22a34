"""The Retry-After gate of one identity: every request waits while a ``Retry-After`` runs, then the gate
reopens gradually, a probe first.

Why gradually: Dataverse's ``Retry-After`` is (about) the time until its window admits *one* more request
(docs/protocol-notes.md §2.12; the emulator's algorithm is inferred), and it lengthens the delay for a user who sends
while throttled. Releasing every held request at that moment sends them all into a window that has room for
a few: the first goes, the others draw a new 429 (measured before this gate: 12.8 % of the requests throttled
against a 20-requests-per-10-s window). So, once the wait is over:

* one request goes alone (the probe); the others wait for its answer;
* each success lets one more request be in flight (slow start: the number in flight doubles every round
  trip) until ``open_at`` may be, when the gate is open again;
* a success that reports how many requests the window still admits (``x-ms-ratelimit-burst-remaining-xrm-requests``,
  Dataverse only) never widens beyond that number, less the requests that may have taken it: those sent after it
  and those sent before it and not answered yet; when nothing is left (open or resuming) the next request would
  be refused, so the identity is held, then probes: until the oldest of its own answered requests leaves the
  window (``window_s``, when known: Dataverse counts a request in its window from its admission, which is
  before its answer), else for ``empty_window_hold_s`` (1 s, the granularity of ``Retry-After``; inferred);
* a 429 on the way blocks the gate again and the resume starts over with a probe.

Hand-written: the rule is the services' own (a header and the Retry-After semantics), about 60 lines, and must
share its state between the threads of one identity; no retry library offers a gate across requests.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Sleep = Callable[[float], None]
BURST_REMAINING_HEADER = "x-ms-ratelimit-burst-remaining-xrm-requests"
#: Once this many requests may be in flight again the gate is open (Dataverse's per-user concurrency limit).
OPEN_AT = 52


@dataclass(frozen=True)
class Ticket:
    """A request that passed the gate; hand it back with its outcome (``ResumeGate.done``)."""

    epoch: int
    counted: bool  # passed while the gate was resuming: it holds one of the places in flight
    seq: int = 0  # how many requests passed before this one


class ResumeGate:
    def __init__(self, sleep: Sleep = time.sleep, *, clock: Callable[[], float] = time.monotonic,
                 open_at: int = OPEN_AT, empty_window_hold_s: float = 1.0, window_s: float | None = None) -> None:
        self._sleep = sleep
        self._clock = clock
        self.open_at = open_at
        self.empty_window_hold_s = empty_window_hold_s
        self.window_s = window_s
        self._answered: deque[float] = deque()  # when this identity's successful requests were answered (one window)
        self._cond = threading.Condition()
        self._blocked_until = 0.0
        self._cap: int | None = None  # None: open; else how many requests may be in flight while resuming
        self._in_flight = 0  # requests passed while resuming, not answered yet
        self._epoch = 0  # a block starts a new resume; answers of older ones do not count in it
        self._passed = 0  # requests passed in all
        self._outstanding: set[int] = set()  # the seq of every request passed and not answered yet (any epoch)
        self.on_block: list[Callable[[float], None]] = []  # told the seconds of every block (the shared budget)
        self.blocks = 0

    @property
    def resuming(self) -> bool:
        with self._cond:
            return self._cap is not None

    def enter(self) -> Ticket:
        """Wait until this request may go: the block is over, and while resuming, a place in flight is free."""
        waited_for: float | None = None
        while True:
            with self._cond:
                until = self._blocked_until
                remaining = until - self._clock()
                if remaining <= 0 or until == waited_for:  # over, or this deadline already slept out (a test's sleep)
                    if self._cap is None:
                        return self._pass(counted=False)
                    if self._in_flight < self._cap:
                        self._in_flight += 1
                        return self._pass(counted=True)
                    self._cond.wait(timeout=1.0)  # until an answer (re-checked every second)
                    continue
            self._sleep(remaining)
            waited_for = until

    def _pass(self, *, counted: bool) -> Ticket:
        self._passed += 1
        self._outstanding.add(self._passed - 1)
        return Ticket(self._epoch, counted=counted, seq=self._passed - 1)

    def block(self, seconds: float) -> None:
        """A 429 with ``Retry-After: seconds``: hold every request until then, then resume with a probe."""
        with self._cond:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)
            self._epoch += 1
            self._cap, self._in_flight = 1, 0
            self.blocks += 1
            self._cond.notify_all()
        for tell in self.on_block:
            tell(seconds)

    def blocked_for(self) -> float:
        """Seconds until the current block ends (0: not blocked)."""
        with self._cond:
            return max(0.0, self._blocked_until - self._clock())

    def hold(self, seconds: float) -> None:
        """Another process of this identity is blocked this long: hold too, then resume with a probe (its 429 is
        the identity's; Dataverse lengthens the delay for every request sent meanwhile)."""
        with self._cond:
            if self._clock() + seconds <= self._blocked_until:
                return
            self._blocked_until = self._clock() + seconds
            self._epoch += 1
            self._cap, self._in_flight = 1, 0
            self._cond.notify_all()

    def done(self, ticket: Ticket, *, success: bool, burst_remaining: int | None = None) -> None:
        """The request of ``ticket`` was answered (``success``: not throttled, not failed)."""
        with self._cond:
            resuming = self._cap is not None and ticket.epoch == self._epoch
            if resuming and ticket.counted:
                self._in_flight = max(0, self._in_flight - 1)
            now = self._clock()
            if success and self.window_s is not None:
                self._answered.append(now)
                while self._answered and self._answered[0] <= now - self.window_s:
                    self._answered.popleft()
            self._outstanding.discard(ticket.seq)
            left: int | None = None
            if burst_remaining is not None:
                # What it reported left may have been taken by the requests sent after it, and by those sent before
                # it and not answered yet (the server may admit them after it: threads reorder under load). Count
                # them all as spent; without the earlier ones, 1 of 8 runs of the gate's test on a loaded machine
                # saw a 429 after the block.
                sent_since = self._passed - ticket.seq - 1
                earlier = sum(1 for seq in self._outstanding if seq < ticket.seq)
                left = burst_remaining - sent_since - earlier
            if left is not None and left <= 0:
                # The window is full, or will be: the next request would be refused. Hold, then probe (open or
                # resuming).
                hold = self.empty_window_hold_s
                if self.window_s is not None and self._answered:
                    hold = max(0.05, self._answered[0] + self.window_s - now)
                self._blocked_until = max(self._blocked_until, now + hold)
                self._epoch += 1
                self._cap, self._in_flight = 1, 0
            elif success and resuming and self._cap is not None:
                self._cap += 1
                if left is not None:
                    self._cap = min(self._cap, left)
                if self._cap >= self.open_at:
                    self._cap = None
            self._cond.notify_all()
