"""Hostile input: thousands of generated bodies against /predict and /feedback, never a 5xx, always a problem document.

Each generated body has an oracle independent of the service: it is parsed with `json` (duplicate member names
found with an `object_pairs_hook`) and validated against the service's own OpenAPI schema. A body the schema
accepts must get a 200 whose body fits the response schema; one it refuses must get the 4xx the README promises,
as an RFC 9457 problem whose `errors[].pointer`s lead into the body. Fast runs go through Flask's test client;
the slow class repeats the transport-level attacks (content types, oversized, truncated and chunked bodies)
against a real gunicorn and checks its memory afterwards.

Cases, each run (two models): 1200 /predict and 600 /feedback bodies, 400 content types, 200 oversized bodies and
200 routes through the test client (about 2,500 sent: bodies over the size limit are left to the oversized test);
480 + 2,000 requests against gunicorn.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from service.artifact.card import ModelCard
from service.artifact.datasets import Dataset
from service.artifact.training import train
from service.settings import Settings
from service.web.app import create_app
from service.web.openapi import build_document
from service.web.validation import MAX_MAGNITUDE
from tests.conftest import InMemoryTelemetry
from tests.support.examples import examples
from tests.support.ports import free_port
from tests.test_serving import serve

PROBLEM = "application/problem+json"
GUNICORN = "gunicorn"  # marks replies that gunicorn itself gives to what is not HTTP
FAST = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Nesting depth the generator uses: shallow, or far past any recursion limit (between the two, whether the
# parser or the duplicate check gives up first is an implementation detail: both are a 4xx).
SHALLOW, DEEP = 20, 50_000


# --- building bodies: JSON text with what json.dumps cannot write (repeated names, raw number literals) ----------
@dataclass(frozen=True)
class Raw:
    """JSON text written as is: `NaN`, `1e400`, a 400-digit integer, `"\\ud800"`."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """A JSON object written member by member, so names can repeat."""

    items: tuple[tuple[str, Any], ...]


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items) + "}"
    if isinstance(value, dict):
        return dump(Pairs(tuple(value.items())))
    if isinstance(value, list | tuple):
        return "[" + ",".join(dump(item) for item in value) + "]"
    return json.dumps(value, allow_nan=True)


# --- the oracle -------------------------------------------------------------------------------------------------
class _Repeated(Exception):
    pass


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({name for name, _ in pairs}) != len(pairs):
        raise _Repeated
    return dict(pairs)


@dataclass
class Expected:
    """What the service must answer: a set of statuses, and the parsed body (None when it is not JSON)."""

    statuses: frozenset[int]
    payload: Any = None


def expect(body: bytes, validator: Draft202012Validator, array: str, max_batch: int) -> Expected:
    """The statuses the README promises for `body` sent as application/json under the body size limit."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # includes UnicodeDecodeError
        return Expected(frozenset({400}))
    try:
        json.loads(body, object_pairs_hook=_no_repeats)
    except _Repeated:
        return Expected(frozenset({422}), payload)
    except RecursionError:
        return Expected(frozenset({400, 422}), payload)
    if validator.is_valid(payload) and not _has_nan(payload):  # JSON Schema cannot say "not NaN": NaN is not JSON
        return Expected(frozenset({200}), payload)
    items = payload.get(array) if isinstance(payload, dict) else None
    if isinstance(items, list) and len(items) > max_batch:
        return Expected(frozenset({413}), payload)
    return Expected(frozenset({422}), payload)


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, dict):
        return any(_has_nan(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_nan(item) for item in value)
    return False


def _unescape(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")


def parent_resolves(payload: Any, pointer: str) -> bool:
    """True when every segment of `pointer` but the last leads somewhere in `payload` (the last may be missing)."""
    if pointer == "":
        return True
    assert pointer.startswith("/"), pointer
    node = payload
    for segment in pointer[1:].split("/")[:-1]:
        name = _unescape(segment)
        if isinstance(node, dict) and name in node:
            node = node[name]
        elif isinstance(node, list) and name.isdigit() and int(name) < len(node):
            node = node[int(name)]
        else:
            return False
    last = _unescape(pointer.rsplit("/", 1)[1])
    if name_truncated := last.endswith("…"):  # long names are cut in pointers (service.web.validation)
        last = last[:-1]
    if isinstance(node, dict):
        return True  # a missing member is named by where it belongs
    if isinstance(node, list):
        return last.isdigit() and int(last) < len(node) and not name_truncated
    return False


STATS: Counter[tuple[str, int]] = Counter()  # (endpoint, status) over the module, printed at its end (-s)


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if STATS:
        print(f"\nhostile input through the test client: {sum(STATS.values())} cases, {dict(sorted(STATS.items()))}")


def check_response(
    status: int,
    content_type: str | None,
    text: str,
    expected: Expected | None,
    document: dict[str, Any],
    response_schema: str,
) -> None:
    """The invariants every response to hostile input must hold."""
    assert status < 500, text
    if expected is not None:
        assert status in expected.statuses, (status, expected.statuses, text[:500])
    body = json.loads(text)
    if status == 200:
        if response_schema:
            _validator(document, response_schema).validate(body)
        return
    assert content_type == PROBLEM, (status, content_type)
    _validator(document, "Problem").validate(body)
    assert body["status"] == status
    assert "Traceback" not in text
    if status == 422:
        assert body["errors"], body
        if expected is not None and expected.payload is not None:
            for error in body["errors"]:
                assert parent_resolves(expected.payload, error["pointer"]), (error, text[:300])


_VALIDATORS: dict[tuple[int, str], Draft202012Validator] = {}


def _validator(document: dict[str, Any], name: str) -> Draft202012Validator:
    """JSON Schema 2020-12 (what OpenAPI 3.1 uses), with Python's `re`: the ECMA engine refuses lone surrogates."""
    key = (id(document), name)
    if key not in _VALIDATORS:
        schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
        _VALIDATORS[key] = Draft202012Validator(schema)
    return _VALIDATORS[key]


# --- strategies -------------------------------------------------------------------------------------------------
NAMES = st.one_of(
    st.text(min_size=1, max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30),
    st.sampled_from(["", "~", "/", "a/b~c", "__proto__", "constructor", "instances", "feedback", "é" * 3, "🙂"]),
    st.builds(lambda n: "k" * n, st.integers(100, 5000)),
)
BAD_NUMBERS = st.one_of(
    st.sampled_from(
        [Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400"), Raw("-1e309"), Raw("9" * 400), Raw("1e308")]
    ),
    st.floats(min_value=1.0000001e100, allow_infinity=False).flatmap(lambda x: st.sampled_from([x, -x])),
)
GOOD_NUMBERS = st.one_of(  # within the service's magnitude bound (service.web.validation.MAX_MAGNITUDE)
    st.floats(min_value=-1e100, max_value=1e100),
    st.integers(-(10**100), 10**100),
    st.sampled_from([Raw("1e100"), Raw("-1E+100"), Raw("1E-400"), Raw("-0"), Raw("0.0e0"), Raw("1" + "0" * 100)]),
)
WEIRD = st.one_of(
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([Raw('"\\ud800"'), Raw('"\\u0000"'), Raw('"x\\"y"'), Raw("[[[[[[]]]]]]"), Raw("{}")]),
)
STRINGS = st.one_of(st.text(max_size=20), st.builds(lambda n: "s" * n, st.integers(1000, 20_000)), st.just(""))


Member = tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]  # (values that fit, values that do not)


def feature_values(kind: str, categories: tuple[str, ...]) -> Member:
    if kind == "numeric":
        return st.one_of(GOOD_NUMBERS, st.none()), st.one_of(BAD_NUMBERS, STRINGS, WEIRD)
    good = st.one_of(st.sampled_from(categories or ("x",)), STRINGS, st.none())
    return good, st.one_of(GOOD_NUMBERS, BAD_NUMBERS, WEIRD)


@st.composite
def objects(draw: st.DrawFn, members: dict[str, Member]) -> Any:
    """An object with `members`: half the time all fitting, else with members dropped, wrong, unknown or repeated."""
    if draw(st.booleans()):
        return {name: draw(good) for name, (good, _) in members.items()}
    items = [
        (name, draw(st.one_of(good, good, good, bad)))
        for name, (good, bad) in members.items()
        if draw(st.integers(0, 7))
    ]
    if draw(st.integers(0, 3)) == 0:
        items += draw(st.lists(st.tuples(NAMES, st.one_of(GOOD_NUMBERS, STRINGS, WEIRD)), min_size=1, max_size=3))
    if items and draw(st.integers(0, 5)) == 0:
        name, _ = draw(st.sampled_from(items))
        items.append((name, draw(members[name][0] if name in members else GOOD_NUMBERS)))
    if draw(st.booleans()):
        items = draw(st.permutations(items))
    return Pairs(tuple(items))


@st.composite
def documents(draw: st.DrawFn, array: str, item: st.SearchStrategy[Any], max_batch: int) -> Any:
    """`{array: [item, ...]}` with every kind of wrong around it."""
    size = draw(st.one_of(st.integers(0, 4), st.integers(1, 4), st.integers(max_batch - 1, max_batch + 2)))
    items = draw(st.lists(item, min_size=size, max_size=size)) if size < 8 else [draw(item)] * size
    shape = draw(st.integers(0, 30))
    if shape == 0:
        return draw(st.one_of(st.integers(), STRINGS, st.none(), st.just([]), st.lists(item, max_size=2)))
    if shape == 1:
        return {array: draw(st.one_of(item, STRINGS, st.integers(), st.none(), st.just({})))}
    if shape == 2:
        return {}
    top: list[tuple[str, Any]] = [(array, items)]
    if draw(st.integers(0, 10)) == 0:
        top.append((draw(NAMES), draw(st.one_of(st.integers(), STRINGS))))
    if draw(st.integers(0, 20)) == 0:
        top.append((array, items))  # a repeated top-level member
    return Pairs(tuple(top))


@st.composite
def raw_bodies(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> bytes:
    """The document as bytes, sometimes broken at the byte level."""
    text = dump(draw(documents))
    damage = draw(st.integers(0, 24))
    if damage == 0 and text:
        text = text[: draw(st.integers(0, len(text) - 1))]  # truncated
    elif damage == 1:
        depth = draw(st.sampled_from([SHALLOW, DEEP]))
        text = "[" * depth + text + "]" * depth
    elif damage == 2:
        depth = draw(st.sampled_from([SHALLOW, DEEP]))
        text = '{"a":' * depth + text + "}" * depth
    elif damage == 3:
        return draw(st.binary(max_size=64))
    elif damage == 4:
        raw = text.encode()
        cut = draw(st.integers(0, len(raw)))
        return raw[:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) + raw[cut:]
    elif damage == 5:
        return text.encode("utf-16")
    elif damage == 6:
        return b"\xef\xbb\xbf" + text.encode()
    elif damage == 7:
        text = " \n\t" + text + " \r\n"
    return text.encode()


def predict_documents(card: ModelCard, max_batch: int) -> st.SearchStrategy[Any]:
    members = {spec.name: feature_values(spec.type, spec.categories) for spec in card.features}
    return documents("instances", objects(members), max_batch)


def feedback_documents(card: ModelCard, max_batch: int, known_ids: list[str]) -> st.SearchStrategy[Any]:
    ids = st.one_of(
        st.sampled_from(known_ids),
        st.sampled_from(known_ids).map(str.upper),
        st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
        st.text(max_size=40),
        GOOD_NUMBERS,
        WEIRD,
    )
    if card.task == "classification":
        good_actual: st.SearchStrategy[Any] = st.sampled_from(card.classes)
        actual: st.SearchStrategy[Any] = st.one_of(STRINGS, GOOD_NUMBERS, WEIRD)
    else:
        good_actual, actual = GOOD_NUMBERS, st.one_of(BAD_NUMBERS, STRINGS, WEIRD, st.none())
    members = {"prediction_id": (st.sampled_from(known_ids), ids), "actual": (good_actual, actual)}
    return documents("feedback", objects(members), max_batch)


# --- fixtures ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with numeric and categorical features whose names need escaping in JSON Pointers and JSON."""
    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "blue", "grün"], 200).astype(object)
    size = rng.normal(10, 2, 200)
    frame = pd.DataFrame({"size": size, "colour/hue~1": colour, "wéight 🙂": rng.normal(70, 5, 200)})
    frame.loc[::9, "size"] = np.nan
    target = pd.Series(np.where(colour == "red", 5.0, -5.0) + size)
    output = tmp_path_factory.mktemp("models") / "mixed"
    train(Dataset("csv:mixed.csv", frame, target, "regression", "y"), output=output, name="mixed")
    return output


@dataclass
class Target:
    client: FlaskClient
    card: ModelCard
    document: dict[str, Any]
    settings: Settings


@pytest.fixture(params=["diabetes", "mixed"])
def target(
    request: pytest.FixtureRequest,
    regression_model_dir: Path,
    mixed_model_dir: Path,
    settings: Settings,
    telemetry: InMemoryTelemetry,
) -> Iterator[Target]:
    model_dir = regression_model_dir if request.param == "diabetes" else mixed_model_dir
    local = settings.replace(model_dir=model_dir)
    app: Flask = create_app(local, telemetry=telemetry.telemetry)
    card = ModelCard.load(model_dir)
    yield Target(app.test_client(), card, build_document(card, local), local)
    app.extensions["modellens"].close()


@pytest.fixture
def known_ids(target: Target) -> list[str]:
    response = target.client.post("/predict", json={"instances": [_valid_row(target.card)] * 3})
    ids: list[str] = response.get_json()["prediction_ids"]
    return ids


def _valid_row(card: ModelCard) -> dict[str, Any]:
    return {
        spec.name: (spec.min + spec.max) / 2 if spec.type == "numeric" else spec.categories[0]  # type: ignore[operator]
        for spec in card.features
    }


# --- the fast runs ----------------------------------------------------------------------------------------------
class TestPredictThroughTheTestClient:
    """POST /predict with generated JSON: the oracle's status, never a 5xx, problems that name the field."""

    @pytest.mark.parametrize(
        "body",
        [b'{"instances": [{"a": 1, "a": 2}]}', b"{", b"", b"null", b'{"instances": [' + b"[" * 100_000, b"\xff"],
    )
    def test_fixed_bodies(self, target: Target, body: bytes) -> None:
        self._send(target, body)

    @settings(FAST, max_examples=examples(600))
    @given(data=st.data())
    def test_generated_bodies(self, target: Target, data: st.DataObject) -> None:
        self._send(target, data.draw(raw_bodies(predict_documents(target.card, target.settings.max_batch))))

    @staticmethod
    def _send(target: Target, body: bytes) -> None:
        if len(body) > target.settings.max_body_bytes:
            return
        validator = _validator(target.document, "PredictRequest")
        expected = expect(body, validator, "instances", target.settings.max_batch)
        response = target.client.post("/predict", data=body, content_type="application/json")
        check_response(
            response.status_code,
            response.content_type,
            response.get_data(as_text=True),
            expected,
            target.document,
            "PredictResponse",
        )
        if response.status_code == 200:
            assert len(response.get_json()["predictions"]) == len(expected.payload["instances"])
        STATS[("predict", response.status_code)] += 1


class TestFeedbackThroughTheTestClient:
    """POST /feedback with generated JSON, ids known and unknown: the same invariants."""

    @settings(FAST, max_examples=examples(300))
    @given(data=st.data())
    def test_generated_bodies(self, target: Target, known_ids: list[str], data: st.DataObject) -> None:
        documents = feedback_documents(target.card, target.settings.max_batch, known_ids)
        body = data.draw(raw_bodies(documents))
        if len(body) > target.settings.max_body_bytes:
            return
        expected = expect(body, _validator(target.document, "FeedbackRequest"), "feedback", target.settings.max_batch)
        response = target.client.post("/feedback", data=body, content_type="application/json")
        check_response(
            response.status_code,
            response.content_type,
            response.get_data(as_text=True),
            expected,
            target.document,
            "FeedbackResponse",
        )
        STATS[("feedback", response.status_code)] += 1


CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            None,
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/xml",
            "text/json",
            "application/json-patch",
            "application/jsonx",
            "*/*",
            "",
            "application/json; charset=latin-1",
        ]
    ),
    st.text(max_size=40),
)


class TestTransportThroughTheTestClient:
    """Wrong content types, oversized bodies, unknown routes and methods: the right 4xx, as a problem."""

    @settings(FAST, max_examples=examples(200))
    @given(
        path=st.sampled_from(["/predict", "/feedback"]),
        content_type=CONTENT_TYPES,
        body=st.one_of(st.binary(max_size=200), st.just(b'{"instances": []}')),
    )
    def test_content_types(self, target: Target, path: str, content_type: str | None, body: bytes) -> None:
        headers = {} if content_type is None else {"Content-Type": content_type}
        try:
            response = target.client.post(path, data=body, headers=headers)
        except ValueError:  # werkzeug refuses to build a request with this header (newlines): nothing to send
            return
        mimetype = response.request.mimetype if hasattr(response, "request") else ""
        json_like = mimetype == "application/json" or mimetype.endswith("+json")
        if not json_like:
            assert response.status_code == 415, (content_type, response.status_code)
        check_response(
            response.status_code, response.content_type, response.get_data(as_text=True), None, target.document, ""
        )
        STATS[("content-type", response.status_code)] += 1

    @settings(FAST, max_examples=examples(100))
    @given(extra=st.integers(1, 200_000), path=st.sampled_from(["/predict", "/feedback"]))
    def test_oversized_bodies(self, target: Target, extra: int, path: str) -> None:
        response = target.client.post(
            path, data=b"[" * (target.settings.max_body_bytes + extra), content_type="application/json"
        )
        assert response.status_code == 413
        check_response(413, response.content_type, response.get_data(as_text=True), None, target.document, "")
        STATS[("oversized", 413)] += 1

    @settings(FAST, max_examples=examples(100))
    @given(
        path=st.one_of(
            st.sampled_from(["/predict", "/feedback", "/healthz", "/readyz", "/model", "/metrics", "/openapi.json"]),
            st.text(alphabet=st.characters(codec="ascii", exclude_characters="?#"), max_size=60).map(
                lambda p: "/" + p.lstrip("/")
            ),
        ),
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"]),
    )
    def test_unknown_routes_and_methods(self, target: Target, path: str, method: str) -> None:
        response = target.client.open(path, method=method, data=b"{}", content_type="application/json")
        assert response.status_code < 500
        if response.status_code >= 400:
            assert response.content_type == PROBLEM
            _validator(target.document, "Problem").validate(response.get_json())
        STATS[("routes", response.status_code)] += 1


# --- a real gunicorn ---------------------------------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def worker_pids(master: int) -> list[int]:
    children: list[int] = []
    for task in os.listdir(f"/proc/{master}/task"):
        with open(f"/proc/{master}/task/{task}/children") as handle:
            children += [int(pid) for pid in handle.read().split()]
    return children


def raw_request(port: int, head: bytes, body: bytes = b"", *, read: bool = True, timeout: float = 10.0) -> bytes:
    """Send bytes as they are (truncated, chunked, lying Content-Length) and return what came back."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head + body)
            if not read:
                return b""
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before taking it all (an oversized body)
            pass
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.") else 0


@pytest.mark.slow
class TestRealGunicorn:
    """Default limits, real HTTP: transport attacks get a 4xx problem, the worker keeps serving, memory stays flat."""

    def test_transport_attacks_and_memory(self, regression_model_dir: Path, tmp_path: Path) -> None:
        card = ModelCard.load(regression_model_dir)
        port = free_port()
        limits = Settings()  # the defaults: nothing in the environment sets a limit
        env = {"MODELLENS_PREDICTION_LOG": str(tmp_path / "p.sqlite3"), "MODELLENS_MAX_BODY_BYTES": None}
        env |= {"MODELLENS_MAX_BATCH": None}
        document = build_document(card, limits)
        base = f"http://127.0.0.1:{port}"
        with serve(regression_model_dir, port, None, **env) as service, requests.Session() as http:
            row = _valid_row(card)
            hostile = _hostile_http_cases(port, base, http, row, limits)
            for _ in range(30):  # warm-up, 480 requests: every code path once, allocator arenas settle
                for case in hostile:
                    case()
            (worker,) = worker_pids(service.pid)
            before = rss_kib(worker)
            statuses: dict[int, int] = {}
            started = time.monotonic()
            samples = []
            for index in range(2000):
                if index % 250 == 0:
                    samples.append(rss_kib(worker))
                status, content_type, text = hostile[index % len(hostile)]()
                statuses[status] = statuses.get(status, 0) + 1
                if content_type != GUNICORN:  # not HTTP at all: gunicorn answers before the app exists
                    schema = "PredictResponse" if '"predictions"' in text else "FeedbackResponse"
                    check_response(status, content_type, text, None, document, schema)
            elapsed = time.monotonic() - started
            after = rss_kib(worker)
            assert http.post(f"{base}/predict", json={"instances": [row]}, timeout=10).status_code == 200
            assert worker_pids(service.pid) == [worker], "the worker was replaced"
        print(f"hostile HTTP: 2000 requests in {elapsed:.1f}s, {statuses}, RSS KiB {before} -> {samples} -> {after}")
        assert set(statuses) <= {0, 200, 400, 404, 405, 413, 414, 415, 422}
        assert statuses.get(413, 0) > 0 and statuses.get(415, 0) > 0 and statuses.get(400, 0) > 0
        # Tolerance: 16 MiB above the start at any point, 12 MiB at the end. 2 MiB bodies move glibc's heap up
        # and down in steps of a few MiB (its mmap threshold adapts to them); a leak of 8 KiB per request would
        # add 16 MiB. Measured over eight runs: at most +0.8 to +8.6 MiB, at the end −7.3 to +5.9 MiB.
        assert max([*samples, after]) - before < 16 * 1024, (before, samples, after)
        assert after - before < 12 * 1024, (before, samples, after)


def _chunked(body: bytes, size: int = 8192) -> bytes:
    """`body` in HTTP/1.1 chunked transfer encoding: no Content-Length for the server to check up front."""
    pieces = [body[start : start + size] for start in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


@pytest.mark.slow
class TestChunkedBodiesThroughGunicorn:
    """A chunked body is held to the same limit as one with a Content-Length: over it is a 413, never parsed."""

    LIMIT = 16384

    def test_over_the_limit_is_413_whatever_the_first_part_says(
        self, regression_model_dir: Path, tmp_path: Path
    ) -> None:
        card = ModelCard.load(regression_model_dir)
        port = free_port()
        env = {"MODELLENS_PREDICTION_LOG": str(tmp_path / "p.sqlite3"), "MODELLENS_MAX_BODY_BYTES": str(self.LIMIT)}
        good = json.dumps({"instances": [_valid_row(card)] * 5}).encode()
        cases = {
            "valid JSON, then padding past the limit": (b"/predict", good + b" " * self.LIMIT, 413),
            "JSON cut by the limit": (b"/predict", b'{"instances": [' + b'{"age": 1},' * self.LIMIT, 413),
            "feedback past the limit": (b"/feedback", b'{"feedback": []}' + b"\n" * self.LIMIT, 413),
            "valid JSON under the limit": (b"/predict", good, 200),
            "exactly the limit": (b"/predict", good + b" " * (self.LIMIT - len(good)), 200),
        }
        with serve(regression_model_dir, port, None, **env):
            for name, (path, body, expected) in cases.items():
                head = b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" % path
                head += b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                reply = raw_request(port, head, _chunked(body))
                assert status_of(reply) == expected, (name, reply[:300])
                if expected == 413:
                    problem = json.loads(reply.partition(b"\r\n\r\n")[2])
                    assert str(self.LIMIT) in problem["detail"], name


def _hostile_http_cases(
    port: int, base: str, http: requests.Session, row: dict[str, Any], limits: Settings
) -> list[Callable[[], tuple[int, str | None, str]]]:
    """Requests a client could send by accident or on purpose; each returns (status, content type, body)."""

    def post(
        path: str, body: bytes, content_type: str | None, *, reset_ok: bool = False
    ) -> Callable[[], tuple[int, str | None, str]]:
        def run() -> tuple[int, str | None, str]:
            # A connection per request: some cases make the server close theirs, which a pooled one would race.
            headers = {"Connection": "close", **({"Content-Type": content_type} if content_type else {})}
            try:
                response = http.post(f"{base}{path}", data=body, headers=headers, timeout=30)
            except requests.ConnectionError:
                if not reset_ok:
                    raise
                return 0, GUNICORN, ""
            return response.status_code, response.headers.get("Content-Type"), response.text

        return run

    def raw(
        head: bytes, body: bytes, *, app: bool = True, reset_ok: bool = False
    ) -> Callable[[], tuple[int, str | None, str]]:
        def run() -> tuple[int, str | None, str]:
            reply = raw_request(port, head, body)
            status = status_of(reply)
            if not app or (reset_ok and status == 0):  # gunicorn's own reply, or a reset that lost the 413
                assert status == 0 or 400 <= status < 500, reply[:200]
                return status, GUNICORN, ""
            header, _, text = reply.partition(b"\r\n\r\n")
            content_type = next(
                (
                    line.split(b":", 1)[1].strip().decode()
                    for line in header.split(b"\r\n")
                    if line.lower().startswith(b"content-type:")
                ),
                None,
            )
            return status, content_type, text.decode(errors="replace") if status else ""

        return run

    too_long = b'{"instances": [' + b'{"age": 1},' * (limits.max_body_bytes // 10) + b"{}]}"
    over_batch = json.dumps({"instances": [row] * (limits.max_batch + 1)}).encode()
    good = json.dumps({"instances": [row] * 5}).encode()
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
    return [
        post("/predict", good, "application/json"),
        post("/predict", good, "text/plain"),
        post("/predict", good, None),
        post("/predict", b"bmi=1&age=2", "application/x-www-form-urlencoded"),
        post("/predict", good[: len(good) // 2], "application/json"),
        post("/predict", over_batch, "application/json"),
        post("/predict", b'{"instances": [{"age": NaN, "age": 1e999}]}', "application/json"),
        post("/feedback", b'{"feedback": [{"prediction_id": "' + b"0" * 32 + b'", "actual": 1}]}', "application/json"),
        post("/predict", b"[" * 100_000, "application/json"),
        post("/nope", b"{}", "application/json"),
        post("/predict", too_long, "application/json", reset_ok=True),  # 413 before reading: may reach us as a reset
        # Content-Length over the limit: refused before the body is read.
        raw(head + b"Content-Length: %d\r\n\r\n" % (limits.max_body_bytes + 1), b"{}"),
        # Chunked, no length: the limit still applies while reading.
        raw(
            head + b"Transfer-Encoding: chunked\r\n\r\n",
            b"".join(b"%x\r\n%s\r\n" % (65536, b" " * 65536) for _ in range(40)) + b"0\r\n\r\n",
            reset_ok=True,  # answered 413 past the limit, then closed with the rest unread: the kernel resets
        ),
        # The body ends before Content-Length says: the worker sees a truncated body, not a hang.
        raw(head + b"Content-Length: 100\r\n\r\n", b'{"instances": ['),
        # Not HTTP (a TLS hello), a request line over gunicorn's limit: gunicorn's own plain 4xx, or a close.
        raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"", app=False),
        raw(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"", app=False),
    ]


def test_magnitude_bound_is_the_schemas(regression_model_dir: Path) -> None:
    """The schema bounds numbers where the validator does, so the oracle and the service draw one line."""
    document = build_document(ModelCard.load(regression_model_dir), Settings())
    for schema in document["components"]["schemas"]["Instance"]["properties"].values():
        assert (schema["minimum"], schema["maximum"]) == (-MAX_MAGNITUDE, MAX_MAGNITUDE)
    assert math.isinf(json.loads("1e309")) and sys.float_info.max > MAX_MAGNITUDE
