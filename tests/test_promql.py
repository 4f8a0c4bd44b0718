"""Every PromQL expression of the rules, dashboards and runbooks runs against a real Prometheus scraping the service.

Two real services (`modellens serve`: the diabetes regression model, and a breast-cancer classifier with a
categorical `clinic` column; each with a slice feature and a challenger model), scraped by Debian's Prometheus
with every rules file loaded, get representative traffic: predictions, rejected and malformed requests, injected
slow requests and 5xx (MODELLENS_FAULTS), out-of-range rows, and ground-truth feedback. Then:

- every expression parses and executes (Prometheus answers parse and vector-matching errors even without data);
- every metric name it uses is known: scraped, recorded by a rule, documented in docs/metrics.md, or one of the
  Collector's own metrics;
- recording rules, dashboard queries and dashboard variables return data, for at least one of the two services;
- alert conditions return data once their thresholds are turned into `bool` comparisons (the conditions are not
  supposed to be true here; `promtool test rules` tests when they fire).

What may come back empty, and why, is decided per expression: `UNRUNNABLE` lists what this test cannot produce;
`PENDING_ML_MONITORING` is computed: expressions that need a documented ML-monitoring metric the service does not
expose (yet). Once the service exposes it, the expression must return data, so the test tightens by itself.
Runbook queries ("Confirm with PromQL") only have to parse: they show a condition that is usually false.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from service.artifact.card import ModelCard
from service.artifact.datasets import load_bundled, load_csv
from service.artifact.training import train
from tests.support.otlp import OTLPReceiver
from tests.support.ports import free_port
from tests.support.prometheus import PrometheusError, PrometheusServer
from tests.test_serving import serve

REPO = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((REPO / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
RUNBOOKS = sorted((REPO / "docs" / "runbooks").glob("*.md"))
METRICS_DOC = REPO / "docs" / "metrics.md"

REGRESSION_JOB = "modellens-scrape"  # the scrape job name prometheus/prometheus.yaml uses for the service
CLASSIFIER_JOB = "modellens-classifier"

# Expressions this test cannot give data, by a pattern in the expression, and why.
UNRUNNABLE: dict[str, str] = {
    r'otelcol_|job="otel-collector"': "needs the OpenTelemetry Collector's own metrics; the Collector only runs in the "
    "compose stack (no binary here)",
    r'\(ALERTS\{alertstate="firing"\}\)$': "needs an alert that has been firing for its `for:` duration (2 minutes or "
    "more); prometheus/tests/*.test.yml cover firing",
    r"model:multivariate_significant:increase5m|model:multivariate_z:increase5m >": "present only while the "
    "traffic breaks the features' joint distribution, which this stack's traffic does not; "
    "tests/test_drift_rules.py sends such traffic to a real Prometheus and prometheus/tests/multivariate.test.yml "
    "covers firing",
}
# The Collector's own metrics the rules and dashboards use, as its exporterhelper/receiverhelper documentation names
# them (Prometheus adds `_total` to counters). Listed so that a typo is still caught.
COLLECTOR_METRICS = {
    f"otelcol_exporter_{kind}_{signal}_total"
    for kind in ("sent", "send_failed")
    for signal in ("spans", "metric_points", "log_records")
} | {
    "otelcol_exporter_queue_size",
    "otelcol_exporter_queue_capacity",
    "otelcol_receiver_refused_spans_total",
    "otelcol_receiver_refused_metric_points_total",
}
PROMETHEUS_BUILTINS = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}
GRAFANA_RANGES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
RUNBOOK_PLACEHOLDERS = {"<feature>": "bmi", "<model_version>": ".*"}

PENDING_ML_MONITORING: dict[str, str] = {}
"""Expression -> the documented ML-monitoring metrics it waits for. Filled by the slow tests below."""
UNRUN: dict[str, str] = {}
"""Expression -> the UNRUNNABLE reason that excused it. Filled by the slow tests below."""


# --- reading PromQL without a PromQL parser ----------------------------------------------------------------------
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = {"bool", "and", "or", "unless", "offset", "inf", "nan", "atan2"}
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"(?:0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)[a-zA-Z]*")


def _skip_string(expr: str, start: int) -> int:
    quote, i = expr[start], start + 1
    while i < len(expr) and expr[i] != quote:
        i += 2 if expr[i] == "\\" and quote != "`" else 1
    return i + 1


def _skip_enclosed(expr: str, start: int, closer: str) -> int:
    """Index after the `closer` matching expr[start] (strings inside are skipped whole)."""
    opener, depth, i = expr[start], 0, start
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            i = _skip_string(expr, i)
            continue
        depth += (char == opener) - (char == closer)
        i += 1
        if depth == 0:
            return i
    raise ValueError(f"unbalanced {opener!r} in {expr!r}")


def metric_names(expr: str) -> set[str]:
    """Metric names (and recording rule names) an expression selects: identifiers outside matchers, strings,
    ranges and grouping clauses that are not function names or keywords."""
    names: set[str] = set()
    i = 0
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            i = _skip_string(expr, i)
        elif char == "{":
            i = _skip_enclosed(expr, i, "}")
        elif char == "[":
            i = _skip_enclosed(expr, i, "]")
        elif char == "#":
            newline = expr.find("\n", i)
            i = len(expr) if newline < 0 else newline
        elif char.isdigit() or (char == "." and expr[i + 1 : i + 2].isdigit()):
            match = _NUMBER.match(expr, i)
            i = match.end() if match else i + 1
        elif match := _IDENTIFIER.match(expr, i):
            word, i = match.group(0), match.end()
            following = expr[i:].lstrip()
            if word in _GROUPING:
                if following.startswith("("):
                    i = _skip_enclosed(expr, expr.index("(", i), ")")
            elif following.startswith("(") or re.match(r"(by|without)\b", following):
                pass  # a function, or an aggregation whose grouping comes first: `sum by (x) (...)`
            elif word not in _KEYWORDS:
                names.add(word)
        else:
            i += 1
    return names


def with_bool_comparisons(expr: str) -> str:
    """`expr` with `bool` after every comparison operator: `x > 0.1` keeps its series (value 0 or 1) instead of
    filtering them, so a condition returns data whenever its inputs exist."""
    out: list[str] = []
    i = 0
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            end = _skip_string(expr, i)
        elif char in "{[":
            end = _skip_enclosed(expr, i, "}" if char == "{" else "]")
        elif expr.startswith(("==", "!=", ">=", "<="), i) or char in "<>":
            end = i + (2 if expr[i + 1 : i + 2] == "=" else 1)
            out.append(expr[i:end])
            if not expr[end:].lstrip().startswith("bool"):
                out.append(" bool")
            i = end
            continue
        else:
            end = i + 1
        out.append(expr[i:end])
        i = end
    return "".join(out)


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's `$name` / `${name}` variables replaced (longest names first, so `$__range` is not `$__r...`)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    return expr


def documented_metrics(section: str | None = None) -> set[str]:
    """Prometheus names in the tables of docs/metrics.md (of the `## <section>...` section if given)."""
    text = METRICS_DOC.read_text(encoding="utf-8")
    if section is not None:
        match = re.search(rf"^## {re.escape(section)}.*?(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
        assert match, f"docs/metrics.md has no section '## {section}'"
        text = match.group(0)
    return set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))


def base_name(name: str) -> str:
    """`x_bucket`, `x_sum`, `x_count` -> `x` (docs/metrics.md names histograms by their base name)."""
    return re.sub(r"_(bucket|sum|count)$", "", name)


# --- what to run -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expression:
    source: str  # "rule <name>", "<dashboard> › <panel>", "<runbook>"
    text: str
    kind: str  # record, alert, dashboard, variable, runbook


def rule_expressions(prometheus: PrometheusServer) -> list[Expression]:
    """Every rule as Prometheus loaded it (its own parse of the rule files)."""
    expressions = []
    for group in rules_api(prometheus)["groups"]:
        for rule in group["rules"]:
            kind = "record" if rule["type"] == "recording" else "alert"
            expressions.append(Expression(f"{kind} {rule['name']}", rule["query"], kind))
    return expressions


def dashboard_expressions() -> list[Expression]:
    expressions = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for variable in dashboard["templating"]["list"]:
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
            assert match, f"{path.name}: variable {variable['name']}: only label_values(selector, label) is supported"
            expressions.append(
                Expression(
                    f"{path.stem} $${variable['name']}", f"group by ({match.group(2)}) ({match.group(1)})", "variable"
                )
            )
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["uid"] == "prometheus":
                    expressions.append(Expression(f"{path.stem} › {panel['title']}", target["expr"], "dashboard"))
        for link in dashboard["links"]:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(link["url"]).query)
            for pane in json.loads(query["panes"][0]).values() if "panes" in query else ():
                if pane["datasource"] == "prometheus":
                    for target in pane["queries"]:
                        expressions.append(Expression(f"{path.stem} link {link['title']}", target["expr"], "dashboard"))
    return expressions


def runbook_expressions() -> list[Expression]:
    expressions = []
    for path in RUNBOOKS:
        for block in re.findall(r"```promql\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.DOTALL):
            lines: list[str] = []
            for line in block.splitlines():
                if line.startswith((" ", "\t")) and lines:  # an indented line continues the expression above
                    lines[-1] += " " + line.strip()
                elif line.strip() and not line.startswith("#"):
                    lines.append(line)
            for text in lines:
                for placeholder, value in RUNBOOK_PLACEHOLDERS.items():
                    text = text.replace(placeholder, value)
                expressions.append(Expression(path.stem, text, "runbook"))
    return expressions


def rules_api(prometheus: PrometheusServer) -> dict[str, Any]:
    with requests.get(f"{prometheus.url}/api/v1/rules", timeout=10) as response:
        body = response.json()
    assert body["status"] == "success", body
    data: dict[str, Any] = body["data"]
    return data


# --- the stack ---------------------------------------------------------------------------------------------------
@dataclass
class Service:
    job: str
    card: ModelCard
    base: str
    prediction_ids: list[tuple[str, Any]] = field(default_factory=list)  # (id, prediction)

    @property
    def variables(self) -> dict[str, str]:
        """The dashboards' variables as a user would pick them for this service (All for multi-value ones)."""
        return {
            "job": self.job,
            "model_name": self.card.name,
            "model_version": ".*",
            "feature": ".*",
            "route": "/predict",
        }


@dataclass
class Stack:
    prometheus: PrometheusServer
    services: list[Service]
    present: set[str]  # metric names Prometheus has
    recorded: dict[str, set[str]]  # recording rule -> the names its expression uses


def _predict(http: requests.Session, service: Service, rows: list[dict[str, Any]], **headers: str) -> requests.Response:
    response = http.post(f"{service.base}/predict", json={"instances": rows}, headers=headers, timeout=30)
    if response.status_code == 200:
        body = response.json()
        service.prediction_ids += list(zip(body["prediction_ids"], body["predictions"], strict=True))
    return response


def _row(card: ModelCard, shift: float, i: int, slice_values: dict[str, list[float]]) -> dict[str, Any]:
    """Numeric features at `shift` of their training range, categories in turn, slice features at training values."""
    row: dict[str, Any] = {}
    for spec in card.features:
        if spec.type == "categorical":
            row[spec.name] = spec.categories[i % len(spec.categories)]
        elif spec.name in slice_values:
            row[spec.name] = slice_values[spec.name][i % len(slice_values[spec.name])]
        else:
            row[spec.name] = spec.min + shift * (spec.max - spec.min)  # type: ignore[operator]
    return row


# The incident the traffic stages, large enough to be unambiguous in the ~75 /predict requests per service.
SLOW_REQUESTS = 12  # over 250 ms: about 20 % of answered requests, a burn rate of about 20
FAILED_REQUESTS = 8  # injected 5xx: about 10 %
REJECTED_REQUESTS = 8  # 422: about 10 % of rows
EXPECTED_ALERTS = {"ModelLatencySLOBurnFast", "ModelLatencySLOBurnSlow", "ModelHighErrorRatio", "ModelDataQualitySpike"}


def _traffic(http: requests.Session, service: Service, slices: dict[str, list[float]]) -> None:
    """Predictions across each feature's range, batches, rejected and malformed requests, out-of-range rows, slow
    and failing requests (injected faults), then ground truth for most predictions."""
    card = service.card
    for i in range(30):
        assert _predict(http, service, [_row(card, (i % 10) / 10, i, slices)]).status_code == 200
    for i in range(4):
        assert _predict(http, service, [_row(card, 0.5, i, slices)] * 4).status_code == 200
    assert _predict(http, service, [_row(card, 1.5, 0, slices)] * 3).status_code == 200  # above the training maxima
    for _ in range(REJECTED_REQUESTS):
        assert _predict(http, service, [{card.features[-1].name: "x"}]).status_code == 422
    unsupported = http.post(f"{service.base}/predict", data="x", headers={"Content-Type": "text/plain"}, timeout=10)
    assert unsupported.status_code == 415
    assert http.get(f"{service.base}/model", timeout=10).status_code == 200
    assert http.get(f"{service.base}/no-such-route", timeout=10).status_code == 404
    for i in range(SLOW_REQUESTS):
        slow = _predict(http, service, [_row(card, 0.5, i, slices)], **{"X-Modellens-Fault": "latency=0.3"})
        assert slow.status_code == 200
    for i in range(FAILED_REQUESTS):
        failed = _predict(http, service, [_row(card, 0.5, i, slices)], **{"X-Modellens-Fault": "error"})
        assert failed.status_code == 500

    labelled = service.prediction_ids[:-5]
    if card.task == "classification":
        other = {label: next(c for c in card.classes if c != label) for label in card.classes}
        feedback = [{"prediction_id": pid, "actual": p if i % 3 else other[p]} for i, (pid, p) in enumerate(labelled)]
    else:
        feedback = [
            {"prediction_id": pid, "actual": p * (1.1 if i % 2 else 0.9)} for i, (pid, p) in enumerate(labelled)
        ]
    feedback.append({"prediction_id": "0" * 32, "actual": feedback[0]["actual"]})  # unknown id
    response = http.post(f"{service.base}/feedback", json={"feedback": feedback}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(labelled)
    duplicate = http.post(f"{service.base}/feedback", json={"feedback": feedback[:1]}, timeout=30)
    assert duplicate.status_code == 200 and duplicate.json()["accepted"] == 0


def _warm_up(http: requests.Session, service: Service, slices: dict[str, list[float]]) -> None:
    """One request of each outcome, so their series exist before the measured traffic, as in production where
    Prometheus scrapes long before an incident: rate() cannot see the increase that creates a series."""
    row = [_row(service.card, 0.5, 0, slices)]
    assert _predict(http, service, row).status_code == 200
    assert _predict(http, service, row, **{"X-Modellens-Fault": "error"}).status_code == 500
    assert _predict(http, service, [{service.card.features[-1].name: "x"}]).status_code == 422
    unsupported = http.post(f"{service.base}/predict", data="x", headers={"Content-Type": "text/plain"}, timeout=10)
    assert unsupported.status_code == 415
    assert http.get(f"{service.base}/no-such-route", timeout=10).status_code == 404
    assert http.get(f"{service.base}/model", timeout=10).status_code == 200


def _clinic_dataset(directory: Path) -> Path:
    """breast_cancer with a categorical `clinic` column (three values): a classifier that has a slice feature."""
    dataset = load_bundled("breast_cancer")
    frame = dataset.frame.iloc[:, :8].copy()
    frame.insert(0, "clinic", [("north", "south", "east")[i % 3] for i in range(len(frame))])
    frame["diagnosis"] = dataset.target.to_numpy()
    path = directory / "clinics.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def stack(regression_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    models = tmp_path_factory.mktemp("models")
    clinics = load_csv(_clinic_dataset(models), "diagnosis")
    train(clinics, output=models / "clinics", name="clinics")
    train(clinics, output=models / "clinics-challenger", name="clinics", seed=1)
    train(load_bundled("diabetes"), output=models / "diabetes-challenger", name="diabetes", seed=1)
    sex = next(spec for spec in ModelCard.load(regression_model_dir).features if spec.name == "sex")
    specs = [  # job, model, challenger, slice feature, and the slice values the traffic sends
        (REGRESSION_JOB, regression_model_dir, models / "diabetes-challenger", "sex", {"sex": [sex.min, sex.max]}),
        (CLASSIFIER_JOB, models / "clinics", models / "clinics-challenger", "clinic", {}),
    ]
    with OTLPReceiver() as otlp:
        processes, services = [], []
        try:
            for job, model_dir, challenger, slice_feature, slice_values in specs:
                port = free_port()
                process = serve(
                    model_dir,
                    port,
                    otlp,
                    MODELLENS_SLICES=slice_feature,
                    MODELLENS_SHADOW_MODEL_DIR=str(challenger),
                    MODELLENS_PREDICTION_LOG=str(tmp_path_factory.mktemp("prediction-log") / "predictions.sqlite3"),
                    MODELLENS_FAULTS="1",  # injected only when a request asks for it (X-Modellens-Fault)
                )
                processes.append(process.start())
                services.append((Service(job, ModelCard.load(model_dir), f"http://127.0.0.1:{port}"), slice_values))
            targets = [(s.job, s.base.removeprefix("http://"), "/metrics") for s, _ in services]
            with PrometheusServer(targets, rule_files=RULE_FILES) as prometheus, requests.Session() as http:
                http.trust_env = False
                for service, slice_values in services:
                    _warm_up(http, service, slice_values)
                prometheus.wait_for_scrapes(2)
                for service, slice_values in services:
                    _traffic(http, service, slice_values)
                prometheus.wait_for_scrapes(3)
                time.sleep(2)  # challenger scoring runs in the background; let it finish and be scraped
                prometheus.wait_for_scrapes(2)
                prometheus.wait_for("count(job:slo_predict_latency_errors:ratio_rate5m)")
                time.sleep(3)  # a few rule evaluations (every second here) after the last scrape
                present = {r["metric"]["__name__"] for r in prometheus.query("group by (__name__) ({__name__=~'.+'})")}
                recorded = {
                    rule.source.split(" ", 1)[1]: metric_names(rule.text)
                    for rule in rule_expressions(prometheus)
                    if rule.kind == "record"
                }
                yield Stack(prometheus, [service for service, _ in services], present, recorded)
        finally:
            for process in processes:
                process.stop()


# --- checks ------------------------------------------------------------------------------------------------------
def raw_names(stack: Stack, names: set[str]) -> set[str]:
    """Metric names with recording rule names replaced by the names their rules read, recursively."""
    result: set[str] = set()
    pending, seen = list(names), set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in stack.recorded:
            pending += stack.recorded[name]
        else:
            result.add(name)
    return result


def known(stack: Stack, name: str) -> bool:
    documented = documented_metrics()
    return (
        name in stack.present
        or name in stack.recorded
        or base_name(name) in documented
        or name in documented
        or name in COLLECTOR_METRICS
        or name in PROMETHEUS_BUILTINS
    )


def run(stack: Stack, expr: str) -> list[dict[str, Any]]:
    """Instant query; a parse or execution error fails the test with Prometheus' message."""
    try:
        return stack.prometheus.query(expr)
    except PrometheusError as error:
        pytest.fail(f"Prometheus rejects {expr!r}: {error}")


def why_empty(stack: Stack, expression: Expression) -> str | None:
    """The reason an expression may return no data here, or None if it should have data."""
    for pattern, reason in UNRUNNABLE.items():
        if re.search(pattern, expression.text):
            UNRUN[expression.text] = reason
            return reason
    missing = {base_name(n) for n in raw_names(stack, metric_names(expression.text)) if n not in stack.present}
    waiting = missing & documented_metrics("ML monitoring")
    if waiting and waiting == missing:
        PENDING_ML_MONITORING[expression.text] = "not exposed by the service yet: " + ", ".join(sorted(waiting))
        return PENDING_ML_MONITORING[expression.text]
    return None


def check_returns_data(stack: Stack, expressions: list[tuple[Expression, list[str]]]) -> None:
    """Each expression (with the variants to try, e.g. one per service) returns data, unless why_empty() says why not.

    Empty answers are retried once after a few seconds (rules evaluate every second, scrapes every second)."""
    empty = []
    for expression, variants in expressions:
        results = [run(stack, text) for text in variants]  # every variant parses and executes
        if not any(results):
            empty.append((expression, variants))
    if empty:
        time.sleep(3)
    failures = [
        f"{expression.source}: {variants[0]}"
        for expression, variants in empty
        if not any(run(stack, text) for text in variants) and why_empty(stack, expression) is None
    ]
    assert not failures, "no data for:\n" + "\n".join(failures)


class TestPromQLReading:
    """The small PromQL reader this module uses finds metric names and turns thresholds into bool comparisons."""

    def test_metric_names(self) -> None:
        expr = (
            'sum by (job, le) (rate(http_server_request_duration_seconds_bucket{le="0.25", a=~"x}"}[5m])) '
            "/ on (job) group_left sum(rate(x_total[1h:1m])) * 1e-4 > 0.1 "
            'or label_replace(model:rows:increase10m >= 100, "dst", "v", "", "") unless vector(0) # ignore_me'
        )
        assert metric_names(expr) == {
            "http_server_request_duration_seconds_bucket",
            "x_total",
            "model:rows:increase10m",
        }

    def test_with_bool_comparisons(self) -> None:
        expr = 'a{b!="c", d=~"e>"} > 0.1 and on (x) b >= bool 2 or c == 0 and d != e'
        assert (
            with_bool_comparisons(expr)
            == 'a{b!="c", d=~"e>"} > bool 0.1 and on (x) b >= bool 2 or c == bool 0 and d != bool e'
        )

    def test_substitute(self) -> None:
        assert substitute('rate(x{j="$job"}[$__rate_interval]) ${job}', {"job": "a", "__rate_interval": "1m"}) == (
            'rate(x{j="a"}[1m]) a'
        )


@pytest.mark.slow
class TestEveryExpressionRuns:
    """Rules, dashboards and runbooks against Prometheus scraping two real services after representative traffic."""

    def test_every_rule_evaluates_without_error(self, stack: Stack) -> None:
        rules = [rule for group in rules_api(stack.prometheus)["groups"] for rule in group["rules"]]
        assert len(rules) == sum(
            len(re.findall(r"^\s*- (?:alert|record):", p.read_text(), flags=re.M)) for p in RULE_FILES
        )
        broken = [
            f"{rule['name']}: {rule['health']} {rule.get('lastError', '')}" for rule in rules if rule["health"] != "ok"
        ]
        assert not broken, broken

    def test_every_metric_name_is_known(self, stack: Stack) -> None:
        expressions = rule_expressions(stack.prometheus) + dashboard_expressions() + runbook_expressions()
        unknown = {
            f"{expression.source}: {name}"
            for expression in expressions
            for name in metric_names(substitute(expression.text, GRAFANA_RANGES))
            if not known(stack, name)
        }
        assert not unknown, "typo, or a metric missing from docs/metrics.md:\n" + "\n".join(sorted(unknown))

    def test_recording_rules_return_data(self, stack: Stack) -> None:
        rules = [rule for rule in rule_expressions(stack.prometheus) if rule.kind == "record"]
        check_returns_data(stack, [(rule, [rule.text]) for rule in rules])

    def test_alert_conditions_return_data(self, stack: Stack) -> None:
        alerts = [rule for rule in rule_expressions(stack.prometheus) if rule.kind == "alert"]
        for alert in alerts:
            run(stack, alert.text)  # the condition itself, thresholds included, parses and executes
        check_returns_data(stack, [(alert, [with_bool_comparisons(alert.text)]) for alert in alerts])

    def test_dashboard_queries_and_variables_return_data(self, stack: Stack) -> None:
        expressions = dashboard_expressions()
        assert sum(e.kind == "variable" for e in expressions) >= 5
        variants = [
            (e, list(dict.fromkeys(substitute(e.text, {**GRAFANA_RANGES, **s.variables}) for s in stack.services)))
            for e in expressions
        ]
        check_returns_data(stack, variants)

    def test_prediction_distribution_and_shadow_spread_per_task(self, stack: Stack) -> None:
        """The model-health prediction distribution has live and training shares for both tasks (training deciles
        for regression, classes for classification), and the regression challenger is judged against the training
        prediction spread: none of it may come back empty for the service it applies to."""
        live, training = [e for e in dashboard_expressions() if e.source == "model-health › Prediction distribution"]

        def by_bin(expr: str) -> dict[str, float]:
            return {r["metric"]["bin"]: float(r["value"][1]) for r in run(stack, expr)}

        for service in stack.services:
            # A window over all of the test's traffic: a 1m rate may see none of it by now (0 / 0).
            variables = {**GRAFANA_RANGES, "__rate_interval": "1h", **service.variables}
            live_shares = by_bin(substitute(live.text, variables))
            reference = by_bin(substitute(training.text, variables))
            if service.card.task == "classification":
                assert set(reference) == set(service.card.classes), service.job
            else:  # quantile bins "0", "1", ... of the training predictions
                assert len(reference) >= 2 and set(reference) == {str(i) for i in range(len(reference))}, service.job
            assert set(live_shares) == set(reference), service.job
            assert sum(live_shares.values()) == pytest.approx(1), service.job
            assert sum(reference.values()) == pytest.approx(1), service.job

        regression = next(s for s in stack.services if s.card.task == "regression")
        classifier = next(s for s in stack.services if s.card.task == "classification")
        spread = run(stack, f'job_model:model_prediction_reference_spread:max{{job="{regression.job}"}}')
        assert len(spread) == 1 and float(spread[0]["value"][1]) > 0, spread
        relative = run(
            stack, f'job_model_shadow:model_shadow_absolute_disagreement:relative_rate30m{{job="{regression.job}"}}'
        )
        assert len(relative) == 1 and 0 < float(relative[0]["value"][1]) < float("inf"), relative
        assert not run(stack, f'model_prediction_reference_spread{{job="{classifier.job}"}}'), "regression only"

    def test_runbook_queries_parse(self, stack: Stack) -> None:
        expressions = runbook_expressions()
        assert len(expressions) >= 13
        for expression in expressions:
            run(stack, expression.text)

    def test_every_unrunnable_reason_is_still_needed(self, stack: Stack) -> None:
        """An UNRUNNABLE pattern that excuses nothing is stale: remove it."""
        texts = [e.text for e in rule_expressions(stack.prometheus) + dashboard_expressions()]
        for pattern in UNRUNNABLE:
            assert any(re.search(pattern, text) for text in texts), f"UNRUNNABLE pattern {pattern!r} matches nothing"

    def test_alerts_go_pending_on_the_staged_incident(self, stack: Stack) -> None:
        """Slow requests, injected 5xx and rejected rows make the matching alerts pending for each service, on the
        real metrics (their `for:` durations are longer than this test; promtool tests cover firing)."""
        for service in stack.services:
            alerts = {r["metric"]["alertname"] for r in run(stack, f'ALERTS{{job="{service.job}"}}')}
            assert alerts >= EXPECTED_ALERTS, f"{service.job}: {sorted(alerts)}"

    def test_report_expressions_without_data(self, stack: Stack) -> None:
        """Not a check: lists what returned no data and why (runs last in this class; see `pytest -rs`)."""
        if PENDING_ML_MONITORING or UNRUN:
            lines = [f"PENDING_ML_MONITORING ({len(PENDING_ML_MONITORING)}):"]
            lines += [f"  {expr}  <- {reason}" for expr, reason in sorted(PENDING_ML_MONITORING.items())]
            lines += [f"UNRUNNABLE ({len(UNRUN)}):"] + [
                f"  {expr}  <- {reason}" for expr, reason in sorted(UNRUN.items())
            ]
            pytest.skip("\n".join(lines))
