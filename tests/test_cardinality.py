"""Bounded cardinality: fuzzed paths, methods, headers, feature names and values never become metric series.

Every label value must come from a set fixed before the first request: the routes, the HTTP methods and status
codes the service can answer, the model card's features and classes, the reference profile's bins and slice
values, fixed enums (`allowed_values`). The bound on series is, per metric family, the product of those sets'
sizes over the family's labels (+1 for a label only some series carry, like `error_type`), times the samples a
label set writes (a histogram: its buckets, `_sum` and `_count`), summed over families (`bound`). For the
diabetes model (10 numeric features with 10 bins + `__missing__`, 10 prediction bins), it is 8330 series, of
which HTTP is 10 methods × 11 routes (10 + none for 404s) × 9 statuses × 2 schemes × 2 = 3960 label sets; the
ML metrics are features × bins (10 × 13) per bin metric, features × 6 reasons for data quality, and so on.
After 2500 fuzzed requests the service exposes 796. The bound depends on the model and the code, never on
the traffic; the test also checks that no label value is any string the fuzzer sent.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from otel.metrics import SECONDS_BUCKETS
from service.artifact.card import ModelCard
from service.artifact.profile import MISSING, OTHER, UNSEEN, ReferenceProfile
from service.groundtruth.health import DROP_REASONS
from service.groundtruth.metrics import DELAY_BUCKETS
from service.monitoring.drift import STATUSES as DRIFT_STATUSES
from service.settings import Settings
from service.web.app import create_app
from tests.conftest import InMemoryTelemetry
from tests.test_hostile_input import mixed_model_dir  # noqa: F401  (fixture)

OPENMETRICS = "application/openmetrics-text;version=1.0.0"
KNOWN_METHODS = ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")
STATUSES = ("200", "400", "404", "405", "413", "415", "422", "500", "503")  # every status the service answers
REQUESTS = 2500


@dataclass
class Fuzzed:
    """Every string the fuzzer sent in a place that could leak into a label."""

    strings: set[str]
    requests: int = 0


def allowed_values(app: Flask, card: ModelCard, profile: ReferenceProfile) -> dict[str, set[str]]:
    """Label name → every value it may take, fixed before any request."""
    bins = {label for dist in [*profile.features.values(), profile.prediction] for label in dist.labels}
    slice_values = {value for spec in profile.slices.values() for value in spec.values} | {OTHER}
    return {
        "model_name": {card.name},
        "model_version": {card.version},
        "model_task": {card.task},
        "feature": set(card.feature_names),
        "bin": bins | {MISSING, UNSEEN},
        "method": {"psi", "js", "chi2"},
        "status": set(DRIFT_STATUSES),
        "outcome": {"success", "error", "joined", "correct", "incorrect", "agree", "disagree", "compared"},
        "reason": {"missing", "imputed", "non_finite", "too_large", "wrong_type", "below_min", "above_max"}
        | {"unknown_category"}
        | {"unknown_id", "duplicate"}
        | set(DROP_REASONS),
        "record": {"prediction", "shadow"},
        "statistic": {"mean", "std", "skewness"},
        "slice": set(profile.slices),
        "slice_value": slice_values,
        "actual_class": set(card.classes),
        "predicted_class": set(card.classes),
        "http_request_method": {*KNOWN_METHODS, "_OTHER"},
        "http_route": {rule.rule for rule in app.url_map.iter_rules()},
        "http_response_status_code": set(STATUSES),
        "url_scheme": {"http", "https"},
        "error_type": {status for status in STATUSES if status >= "500"},
    }


def series(text: str) -> dict[str, set[tuple[str, frozenset[tuple[str, str]]]]]:
    """Family → its series: (sample name, labels). target_info (the resource) is left out: it is one series."""
    found: dict[str, set[tuple[str, frozenset[tuple[str, str]]]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("target", "target_info"):
            continue
        found[family.name] = {(sample.name, frozenset(sample.labels.items())) for sample in family.samples}
    return found


def bound(found: dict[str, set[tuple[str, frozenset[tuple[str, str]]]]], allowed: dict[str, set[str]]) -> int:
    """Σ over families of Π |allowed values| of its labels, × the samples per label set (1 + 1 optional label)."""
    total = 0
    for samples in found.values():
        names = {name for _, labels in samples for name, _ in labels if name != "le"}
        per_set = len({sample for sample, _ in samples}) + max(
            (len({v for n, v in labels if n == "le"}) for _, labels in samples), default=0
        )
        sets = 1
        for name in names:
            optional = any(name not in dict(labels) for _, labels in samples)
            sets *= len(allowed[name]) + (1 if optional else 0)
        total += sets * per_set
    return total


def fuzz(client: FlaskClient, card: ModelCard, seed: int) -> Fuzzed:
    """Requests with random paths, methods, headers, feature names and values, and feedback for the 200s."""
    rng = random.Random(seed)
    fuzzed = Fuzzed(set())
    ids: list[str] = []

    def text(low: int = 1, high: int = 24) -> str:
        alphabet = rng.choice([string.ascii_letters + string.digits, string.printable, "é🙂ßø/~{}\"' ", "0123456789."])
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))
        fuzzed.strings.add(value)
        return value

    def value(kind: str) -> Any:
        roll = rng.random()
        if roll < 0.5:
            return rng.uniform(-1, 1) * 10 ** rng.randint(-3, 6) if kind == "numeric" else text()
        if roll < 0.6:
            return None
        return text() if roll < 0.8 else rng.choice([True, [], {}, 1e99])

    for _ in range(REQUESTS):
        roll = rng.random()
        headers = {name: "".join(c for c in text() if c.isprintable()) for name in ("User-Agent", "X-Forwarded-For")}
        headers["Host"] = "".join(c for c in text(3, 12) if c.isalnum())
        if rng.random() < 0.2:
            headers["traceparent"] = f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-0{rng.randint(0, 9)}"
        if roll < 0.35:
            row = {spec.name: value(spec.type) for spec in card.features}
            if rng.random() < 0.2:
                row[text()] = value("numeric")
            if rng.random() < 0.1:
                row.pop(rng.choice(card.feature_names))
            response = client.post("/predict", json={"instances": [row]}, headers=headers)
            if response.status_code == 200:
                ids += response.get_json()["prediction_ids"]
        elif roll < 0.5 and ids:
            actual: Any = rng.choice(card.classes) if card.classes else rng.uniform(-100, 400)
            body = {"feedback": [{"prediction_id": rng.choice(ids), "actual": actual}]}
            client.post("/feedback", json=body, headers=headers)
        elif roll < 0.8:
            method = rng.choice([*KNOWN_METHODS, "".join(rng.choice(string.ascii_uppercase) for _ in range(5))])
            fuzzed.strings.add(method)
            path = "/" + text(0, 40).replace("?", "").replace("#", "").lstrip("/")
            client.open(path, method=method, headers=headers)
        else:
            path = rng.choice(["/healthz", "/readyz", "/model", "/monitoring", "/openapi.json", "/model/reference"])
            client.open(path, method=rng.choice(["GET", "GET", "POST", "DELETE"]), headers=headers)
        fuzzed.requests += 1
    return fuzzed


@dataclass
class Served:
    app: Flask
    card: ModelCard
    profile: ReferenceProfile


@pytest.fixture(params=["diabetes", "mixed-sliced"])
def served(
    request: pytest.FixtureRequest,
    regression_model_dir: Path,
    mixed_model_dir: Path,  # noqa: F811
    settings: Settings,
    telemetry: InMemoryTelemetry,
) -> Iterator[Served]:
    if request.param == "diabetes":
        local = settings.replace(model_dir=regression_model_dir)
    else:  # a categorical slice: its values, fuzzed, must not reach slice_value labels either
        local = settings.replace(model_dir=mixed_model_dir, slices="colour/hue~1")
    app = create_app(local, telemetry=telemetry.telemetry)
    yield Served(app, ModelCard.load(local.model_dir), ReferenceProfile.load(local.model_dir))
    app.extensions["modellens"].close()


def test_series_stay_bounded_and_never_echo_input(served: Served) -> None:
    client = served.app.test_client()
    allowed = allowed_values(served.app, served.card, served.profile)
    fuzzed = fuzz(client, served.card, seed=7)
    found = series(client.get("/metrics", headers={"Accept": OPENMETRICS}).get_data(as_text=True))

    for family, samples in found.items():
        for _, labels in samples:
            for name, value in labels:
                if name == "le":
                    assert value == "+Inf" or float(value) in (*SECONDS_BUCKETS, *DELAY_BUCKETS) or value, value
                    continue
                assert name in allowed, f"{family}: label {name!r} has no stated bound"
                assert value in allowed[name], f"{family}: {name}={value!r} is not from a fixed set"
    echoed = {value for samples in found.values() for _, labels in samples for n, value in labels if n != "le"} & (
        fuzzed.strings - set().union(*allowed.values())
    )
    assert not echoed, f"label values copied from the request: {sorted(echoed)[:5]}"

    count = sum(len(samples) for samples in found.values())
    limit = bound(found, allowed)
    print(f"\n{served.card.name}: {fuzzed.requests} fuzzed requests → {count} series; bound {limit}")
    assert count <= limit


def test_bound_does_not_move_with_traffic(served: Served) -> None:
    """Twice the fuzzing with another seed adds no label value outside the sets: the bound is the same number."""
    client = served.app.test_client()
    allowed = allowed_values(served.app, served.card, served.profile)
    fuzz(client, served.card, seed=1)
    first = series(client.get("/metrics", headers={"Accept": OPENMETRICS}).get_data(as_text=True))
    fuzz(client, served.card, seed=2)
    second = series(client.get("/metrics", headers={"Accept": OPENMETRICS}).get_data(as_text=True))
    assert bound(first, allowed) == bound(second, allowed) or set(second) != set(first)
    assert sum(map(len, second.values())) <= bound(second, allowed)
