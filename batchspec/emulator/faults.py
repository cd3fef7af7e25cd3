"""Injected faults for reliability tests, reproducible with a seed.

``--faults http503=0.1,http429=0.05,reset=0.02,preempt=0.1`` gives, per request, the chance of a
transient 503 ``ServerBusy``, a 429 with ``Retry-After``, a connection dropped without an answer;
and, per task attempt on a low-priority (spot) node, the chance that the node is preempted while
the task runs. HTTP faults come from one ``random.Random(seed)`` stream in arrival order;
preemption draws are keyed by task and attempt, so they do not depend on thread timing.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

KINDS = ("http503", "http429", "reset", "preempt")


@dataclass(frozen=True)
class FaultSpec:
    """Probabilities (0..1) of each fault kind."""

    http503: float = 0.0
    http429: float = 0.0
    reset: float = 0.0
    preempt: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> FaultSpec:
        """Parse ``kind=p,kind=p``; raises ValueError with a clear message."""
        if not text or not text.strip():
            return cls()
        values: dict[str, float] = {}
        for part in text.split(","):
            if not part.strip():
                continue
            name, sep, value = part.partition("=")
            name = name.strip().lower()
            if not sep or name not in KINDS:
                raise ValueError(f"unknown fault {part.strip()!r}: expected kind=probability with kind in {KINDS}")
            try:
                prob = float(value)
            except ValueError:
                raise ValueError(f"fault {name}: {value!r} is not a number") from None
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"fault {name}: probability {prob} is not between 0 and 1")
            values[name] = prob
        spec = cls(**values)
        if spec.http503 + spec.http429 + spec.reset > 1.0:
            raise ValueError("faults: http503 + http429 + reset must not exceed 1")
        return spec

    @property
    def any_http(self) -> bool:
        return self.http503 > 0 or self.http429 > 0 or self.reset > 0


@dataclass
class FaultInjector:
    """Decides faults and counts the ones it injected."""

    spec: FaultSpec
    seed: int | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def http_fault(self) -> str | None:
        """``http503``, ``http429``, ``reset`` or None for the next request."""
        if not self.spec.any_http:
            return None
        with self._lock:
            draw = self._rng.random()
            edge = 0.0
            for kind in ("http503", "http429", "reset"):
                edge += getattr(self.spec, kind)
                if draw < edge:
                    self.counts[kind] += 1
                    return kind
        return None

    def preemption_delay(self, key: str) -> float | None:
        """Seconds into the attempt ``key`` at which its node is preempted, or None."""
        if self.spec.preempt <= 0:
            return None
        rng = random.Random(f"{self.seed}:preempt:{key}")
        if rng.random() >= self.spec.preempt:
            return None
        return 0.05 + rng.random() * 0.25

    def count_preemption(self) -> None:
        with self._lock:
            self.counts["preempt"] += 1
