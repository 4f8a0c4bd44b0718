"""Fault injection for incident rehearsals: added latency in a named stage, and injected errors.

Off unless `MODELLENS_FAULTS=1`. Then every prediction runs through the stage span (default `feature_lookup`, a
simulated feature-store call); a fault fires at random (`MODELLENS_FAULT_LATENCY_PROBABILITY`,
`MODELLENS_FAULT_ERROR_RATE`) or when a request asks for it with `X-Modellens-Fault: latency=0.5` or `error`
(what `modellens loadgen --scenario latency-spike` sends). A fired fault is on the span (`fault.injected`,
`fault.type`, `fault.delay_s`, an event) and in a log line with the trace id, so a rehearsed incident is traced to
its cause exactly like a real one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

__all__ = ["FAULT_HEADER", "FaultInjector", "FaultPlan", "InjectedFault"]

FAULT_HEADER = "X-Modellens-Fault"
_log = structlog.get_logger("service.rehearsal.faults")


class InjectedFault(RuntimeError):
    """The error an injected fault raises; answered as a 500 problem document."""


@dataclass(frozen=True)
class FaultPlan:
    """What to inject: the stage name, random latency and error rates, and the cap on requested delays."""

    stage: str = "feature_lookup"
    latency_probability: float = 0.0
    latency_seconds: float = 0.5
    error_rate: float = 0.0
    max_latency_seconds: float = 5.0


class FaultInjector:
    """Runs the fault stage of a request.

    `rng` decides the random faults and `sleep` waits out an injected delay; rehearsals keep the defaults, tests
    pass a seeded generator and a recorder to see every decision without waiting for it.
    """

    def __init__(
        self,
        plan: FaultPlan,
        tracer: Tracer,
        meter: Meter,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.plan = plan
        self._tracer = tracer
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._injected = meter.create_counter(
            "model.faults.injected", unit="{fault}", description="Faults injected for rehearsals, by type."
        )

    def run_stage(self, header: str | None, attributes: dict[str, str]) -> None:
        """The stage span; sleeps or raises when a fault fires."""
        delay, error = self._decide(header)
        with self._tracer.start_as_current_span(self.plan.stage, attributes=attributes) as span:
            if delay > 0:
                span.set_attributes({"fault.injected": True, "fault.type": "latency", "fault.delay_s": delay})
                span.add_event("fault injected", {"fault.type": "latency", "fault.delay_s": delay})
                self._injected.add(1, {**attributes, "fault.type": "latency"})
                _log.warning("fault injected", fault_type="latency", delay_s=delay, stage=self.plan.stage)
                self._sleep(delay)
            if error:
                span.set_attributes({"fault.injected": True, "fault.type": "error"})
                span.add_event("fault injected", {"fault.type": "error"})
                self._injected.add(1, {**attributes, "fault.type": "error"})
                _log.warning("fault injected", fault_type="error", stage=self.plan.stage)
                raise InjectedFault(f"injected error in stage {self.plan.stage}")

    def _decide(self, header: str | None) -> tuple[float, bool]:
        delay, error = 0.0, False
        if header:
            for part in header.split(","):
                name, _, value = part.strip().partition("=")
                if name == "latency":
                    delay = self._requested_delay(value)
                elif name == "error":
                    error = True
        if delay == 0 and self.plan.latency_probability and self._rng.random() < self.plan.latency_probability:
            delay = self.plan.latency_seconds
        if not error and self.plan.error_rate and self._rng.random() < self.plan.error_rate:
            error = True
        return delay, error

    def _requested_delay(self, value: str) -> float:
        try:
            seconds = float(value) if value else self.plan.latency_seconds
        except ValueError:
            return 0.0
        if not seconds > 0:  # also rejects NaN
            return 0.0
        return min(seconds, self.plan.max_latency_seconds)
