"""Load-generator scenarios and schedules: what traffic to send, and for how long.

Scenarios (combine with `+` in a schedule, or `,` in `--scenario`):
- steady: rows sampled from the model's reference data;
- drift: chosen features shift gradually, from 0 to `--drift-shift` standard deviations over the phase;
- latency-spike: a share of requests asks the service (started with MODELLENS_FAULTS=1) to slow down;
- bad-input: a share of malformed, mistyped and out-of-range rows;
- feedback: delayed ground truth for earlier predictions, with label noise;
- label-drift (with feedback): the ground truth moves while the inputs stay put, from 0 to `--drift-shift` target
  standard deviations over the phase (a classifier: the first class's labels grow to a share of drift-shift / 3).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_SCHEDULE", "SCENARIOS", "Phase", "parse_scenarios", "parse_schedule"]

SCENARIOS = ("steady", "drift", "latency-spike", "bad-input", "feedback", "label-drift")
# Shows every dashboard panel something within 10 minutes: baseline, drift, a latency incident, bad input.
DEFAULT_SCHEDULE = (
    "steady+feedback:120,drift+feedback:180,latency-spike+feedback:120,bad-input+feedback:120,steady+feedback:60"
)


@dataclass(frozen=True)
class Phase:
    """Scenarios active together for a number of seconds."""

    scenarios: frozenset[str]
    seconds: float


def parse_schedule(text: str) -> list[Phase]:
    """`steady:300,drift+feedback:300` → phases; raises ValueError naming the bad part."""
    phases = []
    for part in text.split(","):
        names, _, seconds = part.strip().rpartition(":")
        scenarios = frozenset(name.strip() for name in names.split("+") if name.strip())
        unknown = scenarios - set(SCENARIOS)
        if not names or unknown:
            raise ValueError(f"schedule part {part!r}: use SCENARIO[+SCENARIO]:SECONDS with {', '.join(SCENARIOS)}")
        try:
            duration = float(seconds)
        except ValueError:
            raise ValueError(f"schedule part {part!r}: {seconds!r} is not a number of seconds") from None
        if duration <= 0:
            raise ValueError(f"schedule part {part!r}: the duration must be positive")
        phases.append(Phase(scenarios, duration))
    return phases


def parse_scenarios(text: str) -> frozenset[str]:
    """`steady,drift` (the `--scenario` flag) → the scenarios of one phase; raises ValueError naming unknown ones."""
    scenarios = frozenset(name.strip() for name in text.split(",") if name.strip())
    unknown = scenarios - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenario {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    return scenarios
