"""Injected faults for reliability tests, reproducible with a seed.

``--faults http503=0.1,http429=0.05,reset=0.02,commit-drop=0.02,commit-reset=0.02,preempt=0.1``
gives, per request, the chance of a transient 503 ``ServerBusy``, a 429 with ``Retry-After``, a
connection reset without an answer (the request not handled); of the request handled (committed)
and then its answer lost: the connection closed (``commit-drop``) or reset (``commit-reset``), so
a client cannot tell whether it took effect; and, per task attempt on a low-priority (spot) node,
the chance that the node is preempted while the task runs. HTTP faults come from one
``random.Random`` stream per operation (seeded with ``seed`` and the operation's name), so the
n-th ``create_task_collection`` meets the same fault whatever else ran meanwhile, and preemption
draws are keyed by task and attempt: neither depends on thread timing or on how often a client
polls.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

#: Faults before the handler runs (nothing happened), after it (it happened, the answer is lost).
BEFORE = ("http503", "http429", "reset")
AFTER = ("commit-drop", "commit-reset")
KINDS = (*BEFORE, *AFTER, "preempt")


@dataclass(frozen=True)
class FaultSpec:
    """Probabilities (0..1) of each fault kind."""

    http503: float = 0.0
    http429: float = 0.0
    reset: float = 0.0
    preempt: float = 0.0
    commit_drop: float = 0.0
    commit_reset: float = 0.0

    def chance(self, kind: str) -> float:
        return float(getattr(self, kind.replace("-", "_")))

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
            name = name.strip().lower().replace("_", "-")
            if not sep or name not in KINDS:
                raise ValueError(f"unknown fault {part.strip()!r}: expected kind=probability with kind in {KINDS}")
            try:
                prob = float(value)
            except ValueError:
                raise ValueError(f"fault {name}: {value!r} is not a number") from None
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"fault {name}: probability {prob} is not between 0 and 1")
            values[name.replace("-", "_")] = prob
        spec = cls(**values)
        if sum(spec.chance(kind) for kind in (*BEFORE, *AFTER)) > 1.0:
            raise ValueError(f"faults: {' + '.join((*BEFORE, *AFTER))} must not exceed 1")
        return spec

    @property
    def any_http(self) -> bool:
        return any(self.chance(kind) > 0 for kind in (*BEFORE, *AFTER))


@dataclass
class FaultInjector:
    """Decides faults and counts the ones it injected."""

    spec: FaultSpec
    seed: int | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    def __post_init__(self) -> None:
        self._streams: dict[str, random.Random] = {}
        self._lock = threading.Lock()

    def http_fault(self, operation: str) -> str | None:
        """The fault of the next ``operation`` request (one of :data:`BEFORE` or :data:`AFTER`), or None."""
        if not self.spec.any_http:
            return None
        with self._lock:
            stream = self._streams.get(operation)
            if stream is None:
                stream = self._streams[operation] = random.Random(f"{self.seed}:{operation}")
            draw = stream.random()
            edge = 0.0
            for kind in (*BEFORE, *AFTER):
                edge += self.spec.chance(kind)
                if draw < edge:
                    self.counts[kind] += 1
                    return kind
        return None

    def preemption_delay(self, key: str, within: float | None = None) -> float | None:
        """Seconds into the attempt ``key`` at which its node is preempted, or None: a point of
        the attempt's ``within`` seconds (a simulated task), else a fraction of a second."""
        if self.spec.preempt <= 0:
            return None
        rng = random.Random(f"{self.seed}:preempt:{key}")
        if rng.random() >= self.spec.preempt:
            return None
        return rng.random() * within if within is not None else 0.02 + rng.random() * 0.1

    def count_preemption(self) -> None:
        with self._lock:
            self.counts["preempt"] += 1
