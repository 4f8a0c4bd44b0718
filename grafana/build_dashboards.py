"""Build modellens's Grafana dashboards (grafana/dashboards/*.json) from the panel lists below.

    python grafana/build_dashboards.py          # rewrite the JSON files
    python grafana/build_dashboards.py --check  # exit 1 if a JSON file is out of date (tests/test_dashboards.py)

The JSON is Grafana's classic dashboard model (schemaVersion 42), which Grafana 13 still loads from file
provisioning and migrates on load. Data sources are referred to by their fixed uids only (prometheus, tempo, loki:
grafana/provisioning/datasources/datasources.yaml). Metric names are those of docs/metrics.md; the recording rules
are in prometheus/rules/. Every PromQL expression here runs against a real Prometheus in tests/test_promql.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DASHBOARDS", "OUTPUT_DIR", "main", "render"]

OUTPUT_DIR = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 42
PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
TEMPO = {"type": "tempo", "uid": "tempo"}
LOKI = {"type": "loki", "uid": "loki"}
RUNBOOKS = "https://github.com/modellens/modellens/tree/main/docs/runbooks"

SERVICE_UID = "modellens-service"
MODEL_UID = "modellens-model"
ONCALL_UID = "modellens-oncall"

# The /predict latency SLO (prometheus/rules/serving.rules.yml): 99 % under 250 ms, so the error budget is 1 %.
SLO_BUDGET = 0.01
# The drift decision's effect size (service/monitoring/drift.py DRIFT_EFFECT, alerts.rules.yml); a test keeps
# them equal.
DRIFT_EFFECT = 0.05
PREDICT = 'http_route="/predict"'
PREDICT_SELECTOR = f'{{job="$job", {PREDICT}}}'
SLI_GOOD = f'{{job="$job", {PREDICT}, http_response_status_code!~"5..", le="0.25"}}'
SLI_ALL = f'{{job="$job", {PREDICT}, http_response_status_code!~"5.."}}'

Json = dict[str, Any]


# --- queries -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    """One PromQL target. `instant` for stats, tables and bar gauges; `exemplar` asks Prometheus for exemplars."""

    expr: str
    legend: str = "__auto"
    instant: bool = False
    exemplar: bool = False
    fmt: str = "time_series"

    def target(self, ref: str) -> Json:
        return {
            "refId": ref,
            "datasource": PROMETHEUS,
            "expr": self.expr,
            "legendFormat": self.legend,
            "range": not self.instant,
            "instant": self.instant,
            "exemplar": self.exemplar,
            "format": self.fmt,
            "editorMode": "code",
        }


def significance(kind: str, selector: str) -> str:
    """The drift test's statistic over its critical value: above 1, the change is significant."""
    return f"{kind}:chi2:increase5m{{{selector}}} / {kind}:drift_critical_value:max{{{selector}}}"


def drifting(kind: str) -> str:
    """How many of a model's series read `drift` now, 0 when none do (so the bar shows instead of "No data")."""
    effect = f"{kind}:drift_effect:rate5m"
    return (
        f"count by (model_name, model_version) ({effect} >= {DRIFT_EFFECT} and {kind}:drift_significant:increase5m)"
        f" or 0 * count by (model_name, model_version) ({effect})"
    )


def or_zero(counter: str, selector: str) -> str:
    """Per-challenger rate of a counter that only appears with its first increment, 0 until then (instead of no
    data), using the comparisons counter, which exists as soon as the challenger scores."""
    group = "sum by (shadow_model_version)"
    return (
        f"{group} (rate({counter}{{{selector}}}[$__rate_interval]))"
        f" or {group} (rate(model_shadow_comparisons_total{{{selector}}}[$__rate_interval])) * 0"
    )


def quantiles(
    selector_metric: str, by: str = "", qs: Iterable[float] = (0.5, 0.95, 0.99), *, exemplar: bool
) -> list[Query]:
    """histogram_quantile targets, one per quantile, over `rate(<metric>_bucket{...}[$__rate_interval])`."""
    group = f"le, {by}" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [
        Query(
            f"histogram_quantile({q}, sum by ({group}) (rate({selector_metric}[$__rate_interval])))",
            legend=f"{prefix}p{round(q * 100)}",
            exemplar=exemplar,
        )
        for q in qs
    ]


# --- panels ------------------------------------------------------------------------------------------------------
@dataclass
class Panel:
    """A panel before layout: type, title, queries (PromQL or raw targets for Tempo/Loki) and display options."""

    kind: str
    title: str
    queries: list[Query] = field(default_factory=list)
    description: str = ""
    unit: str = ""
    width: int = 12
    height: int = 8
    thresholds: list[tuple[str, float | None]] = field(default_factory=list)
    datasource: Json = field(default_factory=lambda: PROMETHEUS)
    raw_targets: list[Json] = field(default_factory=list)
    options: Json = field(default_factory=dict)
    transformations: list[Json] = field(default_factory=list)
    links: list[Json] = field(default_factory=list)
    threshold_lines: bool = False
    max: float | None = None

    def to_json(self, panel_id: int, x: int, y: int) -> Json:
        panel: Json = {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
        }
        if self.kind == "text":
            panel["options"] = self.options
            return panel
        panel["datasource"] = self.datasource
        targets = self.raw_targets or [q.target(chr(ord("A") + i)) for i, q in enumerate(self.queries)]
        panel["targets"] = targets
        defaults: Json = {}
        if self.unit:
            defaults["unit"] = self.unit
        if self.max is not None:
            defaults["min"] = 0
            defaults["max"] = self.max
        if self.thresholds:
            defaults["thresholds"] = {
                "mode": "absolute",
                "steps": [{"color": color, "value": value} for color, value in self.thresholds],
            }
            defaults["color"] = (
                {"mode": "thresholds"} if self.kind in ("stat", "bargauge") else {"mode": "palette-classic"}
            )
        if self.threshold_lines:
            defaults["custom"] = {"thresholdsStyle": {"mode": "line+area"}}
        panel["fieldConfig"] = {"defaults": defaults, "overrides": []}
        panel["options"] = {**_default_options(self.kind), **self.options}
        if self.transformations:
            panel["transformations"] = self.transformations
        if self.links:
            panel["links"] = self.links
        return panel


def _default_options(kind: str) -> Json:
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if kind == "timeseries":
        return {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if kind == "stat":
        return {
            "reduceOptions": reduce,
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
            "justifyMode": "auto",
        }
    if kind == "bargauge":
        return {
            "reduceOptions": {**reduce, "values": False},
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
        }
    if kind == "heatmap":
        return {
            "calculate": False,
            "yAxis": {"unit": "s"},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "tooltip": {"mode": "single", "yHistogram": True},
            "legend": {"show": True},
            "rowsFrame": {"layout": "auto"},
        }
    if kind == "table":
        return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    if kind == "logs":
        return {"showTime": True, "wrapLogMessage": True, "sortOrder": "Descending", "enableLogDetails": True}
    if kind == "barchart":
        return {
            "orientation": "auto",
            "stacking": "none",
            "groupWidth": 0.7,
            "barWidth": 0.97,
            "showValue": "auto",
            "xTickLabelRotation": 0,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        }
    return {}


def timeseries(title: str, queries: list[Query], **kw: Any) -> Panel:
    return Panel("timeseries", title, queries, **kw)


def stat(title: str, queries: list[Query], **kw: Any) -> Panel:
    return Panel("stat", title, [_instant(q) for q in queries], **kw)


def bargauge(title: str, queries: list[Query], **kw: Any) -> Panel:
    return Panel("bargauge", title, [_instant(q) for q in queries], **kw)


def table(title: str, queries: list[Query], **kw: Any) -> Panel:
    return Panel("table", title, [_instant(q, fmt="table") for q in queries], **kw)


def barchart(title: str, queries: list[Query], x: str, **kw: Any) -> Panel:
    """Grouped bars: one group per value of label `x`, one bar per query, named by the query's legend. The queries
    run as instant tables (Grafana names their columns `Value #<refId>`), merged into one frame on `x`."""
    names = [q.legend for q in queries]
    values = [f"Value #{chr(ord('A') + i)}" for i in range(len(queries))] if len(queries) > 1 else ["Value"]
    transformations = [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {"excludeByName": {"Time": True}, "renameByName": dict(zip(values, names, strict=True))},
        },
        {"id": "sortBy", "options": {"sort": [{"field": x}]}},
    ]
    return Panel(
        "barchart",
        title,
        [_instant(q, fmt="table") for q in queries],
        options={"xField": x},
        transformations=transformations,
        **kw,
    )


def _instant(q: Query, fmt: str | None = None) -> Query:
    return Query(q.expr, q.legend, instant=True, exemplar=False, fmt=fmt or q.fmt)


def text(title: str, markdown: str, **kw: Any) -> Panel:
    return Panel("text", title, options={"mode": "markdown", "content": markdown.strip() + "\n"}, **kw)


@dataclass(frozen=True)
class Row:
    title: str


# --- links -------------------------------------------------------------------------------------------------------
def dashboard_link(title: str, uid: str, slug: str, tooltip: str) -> Json:
    """A link to another dashboard by uid, carrying the time range and the variables both dashboards share."""
    return {
        "title": title,
        "type": "link",
        "url": f"/d/{uid}/{slug}",
        "icon": "dashboard",
        "tooltip": tooltip,
        "includeVars": True,
        "keepTime": True,
        "targetBlank": False,
        "asDropdown": False,
        "tags": [],
    }


def explore_url(datasource: Json, query: Json) -> str:
    """An Explore URL (schemaVersion 1, one pane) running `query` on `datasource` over the last hour.

    `$job` stays unencoded so Grafana substitutes the dashboard's variable when the link is followed.
    """
    panes = {
        "mln": {
            "datasource": datasource["uid"],
            "queries": [{"refId": "A", "datasource": datasource, **query}],
            "range": {"from": "now-1h", "to": "now"},
        }
    }
    encoded = urllib.parse.quote(json.dumps(panes, separators=(",", ":")), safe="$")
    return f"/explore?schemaVersion=1&orgId=1&panes={encoded}"


def explore_link(title: str, datasource: Json, query: Json, tooltip: str) -> Json:
    return {
        "title": title,
        "type": "link",
        "url": explore_url(datasource, query),
        "icon": "bolt",
        "tooltip": tooltip,
        "includeVars": False,
        "keepTime": False,
        "targetBlank": True,
        "asDropdown": False,
        "tags": [],
    }


SLOW_PREDICT_TRACES = '{ resource.service.name = "$job" && span.http.route = "/predict" && duration > 250ms }'
ERROR_LOGS = '{service_name="$job"} | severity_text=~"ERROR|CRITICAL"'
PREDICT_P99 = (
    'histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{job="$job", '
    f"{PREDICT}}}[5m])))"
)

EXPLORE_LINKS = [
    explore_link(
        "Explore: /predict p99 with exemplars",
        PROMETHEUS,
        {"expr": PREDICT_P99, "exemplar": True, "range": True, "editorMode": "code"},
        "Prometheus in Explore: click an exemplar dot to open its trace",
    ),
    explore_link(
        "Explore: slow /predict traces",
        TEMPO,
        {"queryType": "traceql", "query": SLOW_PREDICT_TRACES, "limit": 20, "tableType": "traces"},
        "Tempo in Explore: /predict traces over 250 ms",
    ),
    explore_link(
        "Explore: error logs",
        LOKI,
        {"expr": ERROR_LOGS, "queryType": "range", "editorMode": "code"},
        "Loki in Explore: ERROR and CRITICAL log lines; each links to its trace",
    ),
]
RUNBOOKS_LINK = {
    "title": "Runbooks",
    "type": "link",
    "url": RUNBOOKS,
    "icon": "doc",
    "tooltip": "One runbook per alert (docs/runbooks/<AlertName>.md)",
    "includeVars": False,
    "keepTime": False,
    "targetBlank": True,
    "asDropdown": False,
    "tags": [],
}


# --- variables ---------------------------------------------------------------------------------------------------
def variable(
    name: str, label: str, query: str, *, multi: bool = False, default: str | None = None, description: str = ""
) -> Json:
    """A Prometheus query variable. Multi-value variables have an All option matching any value (`.*`)."""
    current: Json = {}
    if default is not None:
        current = {"selected": True, "text": default, "value": default}
    elif multi:
        current = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return {
        "name": name,
        "label": label,
        "description": description,
        "type": "query",
        "datasource": PROMETHEUS,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "allValue": ".*" if multi else None,
        "current": current,
        "options": [],
        "regex": "",
        "hide": 0,
        "skipUrlSync": False,
    }


JOB_HELP = (
    "modellens: the OTLP path, every worker (use this). modellens-scrape: the service's own /metrics, one worker per "
    "scrape in the compose stack, the only path in embedded mode."
)


def job_variable(query: str) -> Json:
    return variable("job", "Job", query, description=JOB_HELP)


# --- dashboards --------------------------------------------------------------------------------------------------
@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    variables: list[Json]
    items: list[Panel | Row]
    links: list[Json]
    tags: tuple[str, ...] = ("modellens",)

    def to_json(self) -> Json:
        return {
            "id": None,
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": list(self.tags),
            "timezone": "browser",
            "editable": True,
            "graphTooltip": 1,
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {},
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "annotations": {"list": []},
            "templating": {"list": self.variables},
            "links": self.links,
            "panels": list(_layout(self.items)),
        }


def _layout(items: list[Panel | Row]) -> Iterator[Json]:
    """Place panels left to right in rows of 24 columns; a Row starts a new line with a row header."""
    x = y = line_height = 0
    for panel_id, item in enumerate(items, start=1):
        if isinstance(item, Row):
            y += line_height
            yield {
                "id": panel_id,
                "type": "row",
                "title": item.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
            x, y, line_height = 0, y + 1, 0
            continue
        if x + item.width > 24:
            x, y, line_height = 0, y + line_height, 0
        yield item.to_json(panel_id, x, y)
        x += item.width
        line_height = max(line_height, item.height)


def _service_overview() -> Dashboard:
    requests = "http_server_request_duration_seconds_count"
    by_route = f'{requests}{{job="$job"}}'
    route_buckets = 'http_server_request_duration_seconds_bucket{job="$job", http_route="$route"}'
    server_errors = (
        f'(sum by (http_route) (rate({requests}{{job="$job", http_response_status_code=~"5.."}}[$__rate_interval]))'
        f" or sum by (http_route) (rate({by_route}[$__rate_interval])) * 0)"
        f" / sum by (http_route) (rate({by_route}[$__rate_interval]))"
    )
    client_errors = server_errors.replace('"5.."', '"4.."')
    return Dashboard(
        uid=SERVICE_UID,
        title="modellens · Service overview",
        description="Rate, errors and latency of the model service, with exemplars linking latency to traces.",
        variables=[
            job_variable(f"label_values({requests}, job)"),
            variable(
                "route",
                "Route (latency panels)",
                f'label_values({requests}{{job="$job"}}, http_route)',
                default="/predict",
            ),
        ],
        links=[
            dashboard_link("On-call", ONCALL_UID, "on-call", "Start here during an incident"),
            dashboard_link(
                "Model health", MODEL_UID, "model-health", "Drift, data quality, shadow, realized performance"
            ),
            *EXPLORE_LINKS,
            RUNBOOKS_LINK,
        ],
        items=[
            Row("Traffic"),
            timeseries(
                "Request rate by route",
                [Query(f"sum by (http_route) (rate({by_route}[$__rate_interval]))", "{{http_route}}")],
                unit="reqps",
                description="Requests per second per route template (404s have no route).",
            ),
            timeseries(
                "Requests by status code",
                [
                    Query(
                        f"sum by (http_response_status_code) (rate({by_route}[$__rate_interval]))",
                        "{{http_response_status_code}}",
                    )
                ],
                unit="reqps",
            ),
            timeseries(
                "Rows scored by outcome",
                [
                    Query(
                        'sum by (model_name, outcome) (rate(model_predictions_total{job="$job"}[$__rate_interval]))',
                        "{{model_name}} {{outcome}}",
                    )
                ],
                unit="rowsps",
                width=24,
                description="Rows the model scored per second; outcome=error means the model raised.",
            ),
            Row("Errors"),
            timeseries(
                "Server error ratio (5xx) by route",
                [Query(server_errors, "{{http_route}}")],
                unit="percentunit",
                thresholds=[("green", None), ("red", 0.05)],
                threshold_lines=True,
                description="Share of requests answered with 5xx. ModelHighErrorRatio pages above 5 % on /predict.",
            ),
            timeseries(
                "Client error ratio (4xx) by route",
                [Query(client_errors, "{{http_route}}")],
                unit="percentunit",
                description="Share of requests rejected as invalid (422), unsupported (415) or unknown (404).",
            ),
            Row("Latency"),
            timeseries(
                "Request latency p50 / p95 / p99 (exemplars)",
                quantiles(route_buckets, exemplar=True),
                unit="s",
                thresholds=[("green", None), ("red", 0.25)],
                threshold_lines=True,
                description="Latency of $route. The dots are exemplars: click one, then 'View trace'.",
            ),
            Panel(
                "heatmap",
                "Request latency distribution (exemplars)",
                [
                    Query(
                        f"sum by (le) (rate({route_buckets}[$__rate_interval]))", "{{le}}", exemplar=True, fmt="heatmap"
                    )
                ],
                description="Requests per latency bucket over time for $route; exemplars mark sampled traces.",
            ),
            timeseries(
                "Model inference duration p95 / p99 (exemplars)",
                quantiles(
                    'model_inference_duration_seconds_bucket{job="$job"}', "model_version", (0.95, 0.99), exemplar=True
                ),
                unit="s",
                description="Time the model itself takes per request (all rows of the request).",
            ),
            timeseries(
                "Rows per request p50 / p95",
                quantiles('model_batch_size_bucket{job="$job"}', qs=(0.5, 0.95), exemplar=False),
                unit="short",
            ),
            Row("SLO: 99 % of /predict requests within 250 ms (30 days)"),
            stat(
                "Latency SLI over the dashboard range",
                [
                    Query(
                        f"sum(rate(http_server_request_duration_seconds_bucket{SLI_GOOD}[$__range]))"
                        f" / sum(rate({requests}{SLI_ALL}[$__range]))",
                        "SLI",
                    )
                ],
                unit="percentunit",
                width=6,
                thresholds=[("red", None), ("green", 0.99)],
                description="Share of /predict requests (5xx excluded) answered within 250 ms.",
            ),
            stat(
                "Error budget remaining (30 days)",
                [
                    Query(
                        f"1 - (1 - sum(rate(http_server_request_duration_seconds_bucket{SLI_GOOD}[30d]))"
                        f" / sum(rate({requests}{SLI_ALL}[30d]))) / {SLO_BUDGET}",
                        "budget",
                    )
                ],
                unit="percentunit",
                width=6,
                thresholds=[("red", None), ("orange", 0.25), ("green", 0.5)],
                description="1 - (slow share over 30 days) / 1 %. Below 0 the SLO is missed.",
            ),
            timeseries(
                "Burn rate by window",
                [
                    Query(f'job:slo_predict_latency_errors:ratio_rate{w}{{job="$job"}} / {SLO_BUDGET}', w)
                    for w in ("5m", "1h", "6h", "3d")
                ],
                thresholds=[("green", None), ("orange", 6), ("red", 14.4)],
                threshold_lines=True,
                description=(
                    "Slow share / 1 % budget. Pages at 14.4 (1h and 5m) or 6 (6h and 30m); ticket at 3 (1d) or 1 (3d)."
                ),
            ),
        ],
    )


def _model_health() -> Dashboard:
    model = 'job="$job", model_name="$model_name", model_version=~"$model_version"'
    scores = 'model_name="$model_name", model_version=~"$model_version"'
    features = f'{scores}, feature=~"$feature"'
    live_share = (
        f"sum by (bin) (rate(model_prediction_observations_total{{{model}}}[$__rate_interval]))"
        f" / ignoring (bin) group_left sum(rate(model_prediction_observations_total{{{model}}}[$__rate_interval]))"
    )
    feature_bins = f'model_feature_observations_total{{{model}, feature=~"$feature"}}'
    feature_share = (
        f"sum by (feature, bin) (rate({feature_bins}[$__rate_interval]))"
        f" / on (feature) group_left sum by (feature) (rate({feature_bins}[$__rate_interval]))"
    )
    this_model = 'job="$job", model_name="$model_name"'
    effect_thresholds = [("green", None), ("red", DRIFT_EFFECT)]
    return Dashboard(
        uid=MODEL_UID,
        title="modellens · Model health",
        description=(
            "What the model sees and predicts: versions, drift, data quality, challenger, realized performance."
        ),
        variables=[
            job_variable("label_values(model_info, job)"),
            variable("model_name", "Model", 'label_values(model_info{job="$job"}, model_name)'),
            variable(
                "model_version",
                "Version",
                'label_values(model_info{job="$job", model_name="$model_name"}, model_version)',
                multi=True,
            ),
            variable(
                "feature",
                "Feature",
                'label_values(model_feature_reference_ratio{job="$job", model_name="$model_name"}, feature)',
                multi=True,
            ),
        ],
        links=[
            dashboard_link("On-call", ONCALL_UID, "on-call", "Start here during an incident"),
            dashboard_link("Service overview", SERVICE_UID, "service-overview", "Rate, errors, latency with exemplars"),
            *EXPLORE_LINKS,
            RUNBOOKS_LINK,
        ],
        items=[
            Row("Serving"),
            table(
                "Serving model versions",
                [Query(f"max by (model_name, model_version, model_task) (model_info{{{this_model}}})")],
                width=8,
                transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}],
                description="model_info: which versions are serving (the version is the model card's content hash).",
            ),
            timeseries(
                "Predictions per second by version",
                [
                    Query(
                        f"sum by (model_version, outcome) (rate(model_predictions_total{{{model}}}[$__rate_interval]))",
                        "{{model_version}} {{outcome}}",
                    )
                ],
                unit="rowsps",
                width=8,
            ),
            timeseries(
                "Inference duration p95 (exemplars)",
                quantiles(
                    f"model_inference_duration_seconds_bucket{{{model}}}", "model_version", (0.95,), exemplar=True
                ),
                unit="s",
                width=8,
            ),
            stat(
                "Model age",
                [Query(f"max by (model_version) (model_age_seconds{{{model}}})", "{{model_version}}")],
                unit="s",
                width=8,
                thresholds=[("green", None), ("orange", 20 * 86400), ("red", 30 * 86400)],
                description="Time since training. ModelStale opens a ticket after 30 days.",
                options={"graphMode": "none"},
            ),
            stat(
                "Reference profile age",
                [Query(f"max by (model_version) (model_reference_age_seconds{{{model}}})", "{{model_version}}")],
                unit="s",
                width=8,
                options={"graphMode": "none"},
            ),
            stat(
                "Training duration",
                [Query(f"max by (model_version) (model_training_duration_seconds{{{model}}})", "{{model_version}}")],
                unit="s",
                width=8,
                options={"graphMode": "none"},
            ),
            Row("Predictions"),
            barchart(
                "Prediction distribution",
                [
                    Query(live_share, "live"),
                    Query(f"max by (bin) (model_prediction_reference_ratio{{{model}}})", "training"),
                ],
                x="bin",
                unit="percentunit",
                width=24,
                description="Share of predictions per bin over the rate interval (live) next to the share of the "
                'training predictions (training). Regression: the bins are the training deciles ("0" lowest, about '
                "10 % each in training). Classification: one bin per class.",
            ),
            Row("Drift"),
            timeseries(
                "Feature drift effect (PSI above chance, 5m)",
                [Query(f"model_feature:drift_effect:rate5m{{{features}}}", "{{feature}}")],
                thresholds=effect_thresholds,
                threshold_lines=True,
                description="PSI minus what chance alone gives a window of this size (recording rule). A feature "
                "drifts when this is at least 0.05 and the chi2 test beside is significant; significant and smaller "
                "is a warning. Raw PSI is not thresholded: it grows as windows shrink (docs/metrics.md).",
            ),
            timeseries(
                "Feature drift test: chi2 / critical value (5m)",
                [Query(significance("model_feature", features), "{{feature}}")],
                thresholds=[("green", None), ("orange", 1)],
                threshold_lines=True,
                description="The two-sample chi2 statistic of the window's bin counts against the training counts, "
                "divided by its critical value (1 % over all features, Bonferroni). Above 1 the change is "
                "significant. No line: the window has fewer rows than the test needs (insufficient data).",
            ),
            bargauge(
                "Most drifted features (effect now)",
                [
                    Query(
                        f"topk(10, max by (feature) (model_feature:drift_effect:rate5m{{{features}}}))",
                        "{{feature}}",
                    )
                ],
                thresholds=effect_thresholds,
                width=8,
            ),
            timeseries(
                "Prediction drift (5m)",
                [
                    Query(f"model_prediction:drift_effect:rate5m{{{scores}}}", "effect {{model_version}}"),
                    Query(significance("model_prediction", scores), "chi2 / critical {{model_version}}"),
                ],
                thresholds=effect_thresholds,
                threshold_lines=True,
                width=8,
                description="Effect (PSI above chance; drift from 0.05) and the chi2 test's statistic over its "
                "critical value (significant above 1), for the model's output distribution.",
            ),
            timeseries(
                "Multivariate drift: reconstruction error vs training (5m)",
                [
                    Query(f"model:multivariate_effect:increase5m{{{scores}}}", "error growth {{model_version}}"),
                    Query(
                        f"model:multivariate_z:increase5m{{{scores}}} / model:multivariate_critical_z:increase5m"
                        f"{{{scores}}}",
                        "z / critical {{model_version}}",
                    ),
                ],
                thresholds=[("green", None), ("orange", 0.1), ("red", 1)],
                threshold_lines=True,
                width=8,
                description="The rows' squared PCA reconstruction error relative to held-out training rows (growth: "
                "0.1 is 10 % above), and its z over the critical value (significant above 1). It sees the features' "
                "joint distribution move (broken correlations, swapped columns) where each feature's own test is "
                "quiet. No line: fewer than 100 rows in the window (ModelMultivariateDrift, docs/metrics.md).",
            ),
            timeseries(
                "Prediction drift effect per slice value (5m)",
                [Query(f"model_slice_prediction:drift_effect:rate5m{{{scores}}}", "{{slice}}={{slice_value}}")],
                thresholds=effect_thresholds,
                threshold_lines=True,
                width=8,
                description="Drift counts only where the slice's chi2 test is significant (ModelPredictionDrift).",
            ),
            timeseries(
                "In-process drift scores (service window)",
                [
                    Query(
                        f'max by (feature, method) (model_feature_drift_score{{{model}, feature=~"$feature"}})',
                        "{{feature}} {{method}}",
                    )
                ],
                description="The service's own scores over its sliding window; should agree with the rules above.",
            ),
            bargauge(
                "Feature bin shares: live vs training",
                [
                    Query(feature_share, "live {{feature}} {{bin}}"),
                    Query(
                        f'max by (feature, bin) (model_feature_reference_ratio{{{model}, feature=~"$feature"}})',
                        "training {{feature}} {{bin}}",
                    ),
                ],
                unit="percentunit",
                max=1,
                description="Pick one feature above to compare its bins.",
            ),
            Row("Data quality"),
            timeseries(
                "Data-quality issues per second (top 10 feature/reason)",
                [
                    Query(
                        "topk(10, sum by (feature, reason) ("
                        f"rate(model_data_quality_issues_total{{{model}}}[$__rate_interval])))",
                        "{{feature}} {{reason}}",
                    )
                ],
                description="Rejected rows: missing, wrong_type, non_finite, too_large. Scored rows: imputed, "
                "below_min, above_max, unknown_category (docs/metrics.md, Data quality).",
            ),
            timeseries(
                "Issues per row and rejected share (10m)",
                [
                    Query(
                        f"job_model:model_data_quality_issues_per_row:ratio_rate10m{{{this_model}}}",
                        "issues per row {{model_version}}",
                    ),
                    Query(
                        'job_model:model_rows_rejected:ratio_rate10m{job="$job", model_name="$model_name"}',
                        "rejected {{model_version}}",
                    ),
                ],
                unit="percentunit",
                thresholds=[("green", None), ("red", 0.05)],
                threshold_lines=True,
                description="ModelDataQualitySpike opens a ticket above 5 %.",
            ),
            Row("Shadow (challenger)"),
            timeseries(
                "Challenger disagreement (30m)",
                [
                    Query(
                        f"job_model_shadow:model_shadow_disagreement:ratio_rate30m{{{this_model}}}",
                        "disagreeing share {{shadow_model_version}}",
                    ),
                    Query(
                        f"job_model_shadow:model_shadow_absolute_disagreement:relative_rate30m{{{this_model}}}",
                        "mean |diff| / spread {{shadow_model_version}}",
                    ),
                ],
                thresholds=[("green", None), ("red", 0.1)],
                threshold_lines=True,
                width=8,
                description="Classification: share of rows with another class. Regression: mean absolute difference "
                "relative to the P90-P10 spread of the training predictions.",
            ),
            timeseries(
                "Challenger latency p95",
                quantiles(
                    'model_shadow_duration_seconds_bucket{job="$job", model_name="$model_name"}',
                    "shadow_model_version",
                    (0.95,),
                    exemplar=False,
                ),
                unit="s",
                width=8,
            ),
            timeseries(
                "Challenger errors and skipped rows",
                [
                    Query(or_zero("model_shadow_errors_total", this_model), "errors {{shadow_model_version}}"),
                    Query(or_zero("model_shadow_skipped_total", this_model), "skipped {{shadow_model_version}}"),
                ],
                width=8,
            ),
            Row("Realized performance (ground truth)"),
            timeseries(
                "Accuracy, last hour and last day",
                [
                    Query(
                        'job_model:model_feedback_correct:ratio_rate1h{job="$job", model_name="$model_name"}',
                        "1h {{model_version}}",
                    ),
                    Query(
                        'job_model:model_feedback_correct:ratio_rate1d{job="$job", model_name="$model_name"}',
                        "1d {{model_version}}",
                    ),
                    Query(
                        "job_model:model_prediction_expected_accuracy:ratio_rate1h"
                        '{job="$job", model_name="$model_name"}',
                        "expected 1h (CBPE) {{model_version}}",
                    ),
                ],
                unit="percentunit",
                width=8,
                description="Classification models. Realized accuracy from joined labels (1h, 1d) beside the "
                "accuracy expected from the model's calibrated probabilities (CBPE, no labels needed): a gap that "
                "opens says the probabilities no longer describe the traffic (docs/metrics.md).",
            ),
            timeseries(
                "MAE and RMSE, last hour",
                [
                    Query(
                        'job_model:model_feedback_absolute_error:mean_rate1h{job="$job", model_name="$model_name"}',
                        "MAE {{model_version}}",
                    ),
                    Query(
                        f"sqrt(sum by (model_version) (rate(model_feedback_squared_error_total{{{model}}}[1h]))"
                        " / sum by (model_version) ("
                        f'rate(model_feedback_labels_total{{{model}, outcome="joined"}}[1h])))',
                        "RMSE {{model_version}}",
                    ),
                ],
                width=8,
                description="Regression models.",
            ),
            timeseries(
                "Per-class precision, recall and F1, last hour",
                [
                    Query(
                        f'job_model_class:model_feedback_{name}:ratio_rate1h{{job="$job", model_name="$model_name"}}',
                        f"{name} {{{{class}}}} {{{{model_version}}}}",
                    )
                    for name in ("precision", "recall", "f1")
                ],
                unit="percentunit",
                width=8,
                description="Classification models, from the confusion counters (recording rules). A class never "
                "predicted has no precision line, one never labelled no recall line.",
            ),
            timeseries(
                "ROC AUC per class, last day",
                [
                    Query(
                        'job_model_class:model_feedback_roc_auc:ratio_increase1d{job="$job", model_name="$model_name"}',
                        "{{class}} {{model_version}}",
                    )
                ],
                max=1,
                width=8,
                description="Calibrated classifiers: one-vs-rest ROC AUC from the labels of the last day, at the 20 "
                "score bins' resolution (a binary model: its second class). 0.5 is chance. No line: no label of "
                "that class, or of the others, joined in the day (docs/metrics.md, ROC AUC and calibration).",
            ),
            barchart(
                "Reliability: accuracy per confidence bin, last day",
                [
                    Query(
                        "max by (bin) (job_model_bin:model_feedback_confidence_accuracy:ratio_increase1d"
                        '{job="$job", model_name="$model_name", model_version=~"$model_version"})',
                        "accuracy",
                    )
                ],
                x="bin",
                unit="percentunit",
                max=1,
                width=8,
                description="Labels grouped by the calibrated probability of the predicted class: bin 8 holds "
                "[0.8, 0.9). A calibrated model is right that often in each bin; bars below their bin say the model "
                "is overconfident, and its expected accuracy (CBPE) too high.",
            ),
            timeseries(
                "Label drift: ground truth vs training target (1h)",
                [
                    Query(f"model_label:drift_effect:increase1h{{{scores}}}", "effect {{model_version}}"),
                    Query(
                        f"model_label:chi2:increase1h{{{scores}}} / on (model_name, model_version) "
                        f"max by (model_name, model_version) (model_label_drift_critical_value{{{scores}}})",
                        "chi2 / critical {{model_version}}",
                    ),
                ],
                thresholds=effect_thresholds,
                threshold_lines=True,
                width=8,
                description="The labels joined in the last hour against the training target (a regressor's "
                "deciles, a classifier's classes): effect (PSI above chance; drift from 0.05) and the chi2 test's "
                "statistic over its critical value (significant above 1). No chi2 line: fewer labels than the test "
                'needs (ModelLabelDrift, docs/metrics.md "Label drift").',
            ),
            barchart(
                "Label distribution: last hour vs training",
                [
                    Query(
                        "max by (bin) (model_label_bin:observations:increase1h"
                        f"{{{scores}}} / on (model_name, model_version) group_left () "
                        f"model_label:observations:increase1h{{{scores}}})",
                        "last hour",
                    ),
                    Query(f"max by (bin) (model_label_bin:reference_share:max{{{scores}}})", "training"),
                ],
                x="bin",
                unit="percentunit",
                width=8,
                description="Share of the last hour's labels per training-target bin next to the training share. "
                'Regression: the target\'s training deciles ("0" lowest). Classification: one bin per class.',
            ),
            timeseries(
                "Feedback labels and rejections per second",
                [
                    Query(
                        f"sum by (outcome) (rate(model_feedback_labels_total{{{model}}}[$__rate_interval]))",
                        "{{outcome}}",
                    ),
                    Query(
                        f"sum by (reason) (rate(model_feedback_rejected_total{{{model}}}[$__rate_interval]))",
                        "rejected {{reason}}",
                    ),
                ],
                width=8,
            ),
            timeseries(
                "Label delay p50 / p95",
                quantiles(f"model_feedback_delay_seconds_bucket{{{model}}}", qs=(0.5, 0.95), exemplar=False),
                unit="s",
                width=8,
            ),
            table(
                "Confusion matrix (dashboard range)",
                [
                    Query(
                        "sum by (actual_class, predicted_class) ("
                        f"increase(model_feedback_class_labels_total{{{model}}}[$__range]))"
                    )
                ],
                width=8,
                transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
            ),
            timeseries(
                "Accuracy and MAE per slice value (1h)",
                [
                    Query(
                        "sum by (slice, slice_value) ("
                        f'rate(model_slice_feedback_labels_total{{{model}, outcome="correct"}}[1h]))'
                        " / sum by (slice, slice_value) ("
                        f'rate(model_slice_feedback_labels_total{{{model}, outcome=~"correct|incorrect"}}[1h]))',
                        "accuracy {{slice}}={{slice_value}}",
                    ),
                    Query(
                        f"sum by (slice, slice_value) (rate(model_slice_feedback_absolute_error_total{{{model}}}[1h]))"
                        " / sum by (slice, slice_value) ("
                        f'rate(model_slice_feedback_labels_total{{{model}, outcome="joined"}}[1h]))',
                        "MAE {{slice}}={{slice_value}}",
                    ),
                ],
                width=8,
            ),
        ],
    )


ONCALL_HELP = """
**Start here.** Anything red below links to its dashboard; every alert has a runbook (link above).

From a latency spike to its cause:
1. *Service overview* → **Request latency p50 / p95 / p99 (exemplars)**: hover a dot on the spike, click
   **View trace**.
2. In the trace, the `validate` and `inference` spans show where the time went; open the server span's menu →
   **Logs for this span** for the request's log lines (Loki, filtered on `trace_id`).
3. From a log line, **View trace** goes back. `modellens triage --prometheus URL --since 30m` walks the same path.
"""


def _oncall() -> Dashboard:
    return Dashboard(
        uid=ONCALL_UID,
        title="modellens · On-call",
        description="Entry point during an incident: what is firing, golden signals, models, telemetry pipeline.",
        variables=[job_variable("label_values(model_info, job)")],
        links=[
            dashboard_link("Service overview", SERVICE_UID, "service-overview", "Rate, errors, latency with exemplars"),
            dashboard_link(
                "Model health", MODEL_UID, "model-health", "Drift, data quality, shadow, realized performance"
            ),
            *EXPLORE_LINKS,
            RUNBOOKS_LINK,
        ],
        items=[
            Row("Is anything on fire?"),
            text("How to use this dashboard", ONCALL_HELP, width=8, height=9),
            stat(
                "Pages firing",
                [Query('count(ALERTS{alertstate="firing", severity="page"}) or vector(0)', "pages")],
                width=4,
                height=9,
                thresholds=[("green", None), ("red", 1)],
                options={"graphMode": "none"},
            ),
            table(
                "Firing alerts",
                [Query('sum by (alertname, severity, job, model_name, feature) (ALERTS{alertstate="firing"})')],
                width=12,
                height=9,
                transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}],
                links=[{"title": "Runbooks", "url": RUNBOOKS, "targetBlank": True}],
                description="Each alert's runbook_url annotation points at docs/runbooks/<alertname>.md.",
            ),
            Row("Golden signals: /predict"),
            stat(
                "Requests per second",
                [
                    Query(
                        f"sum(rate(http_server_request_duration_seconds_count{PREDICT_SELECTOR}[$__rate_interval]))",
                        "req/s",
                    )
                ],
                unit="reqps",
                width=6,
                links=[
                    {
                        "title": "Service overview",
                        "url": f"/d/{SERVICE_UID}/service-overview?${{__url_time_range}}&${{job:queryparam}}",
                    }
                ],
            ),
            stat(
                "Server error ratio (5m)",
                [Query(f'job_route:http_server_request_errors:ratio_rate5m{{job="$job", {PREDICT}}}', "5xx")],
                unit="percentunit",
                width=6,
                thresholds=[("green", None), ("red", 0.05)],
                links=[
                    {
                        "title": "Service overview",
                        "url": f"/d/{SERVICE_UID}/service-overview?${{__url_time_range}}&${{job:queryparam}}",
                    }
                ],
            ),
            timeseries(
                "p99 latency (exemplars)",
                [
                    Query(
                        "histogram_quantile(0.99, sum by (le) ("
                        f"rate(http_server_request_duration_seconds_bucket{PREDICT_SELECTOR}[$__rate_interval])))",
                        "p99",
                        exemplar=True,
                    )
                ],
                unit="s",
                width=6,
                thresholds=[("green", None), ("red", 0.25)],
                threshold_lines=True,
            ),
            stat(
                "Latency SLO burn rate (1h)",
                [Query(f'job:slo_predict_latency_errors:ratio_rate1h{{job="$job"}} / {SLO_BUDGET}', "burn")],
                width=6,
                thresholds=[("green", None), ("orange", 6), ("red", 14.4)],
                description="1 = spending the 1 % budget exactly over 30 days; 14.4 pages.",
            ),
            Row("Models"),
            stat(
                "Model service targets up",
                [Query('up{job=~"modellens.*"}', "{{instance}}")],
                width=6,
                thresholds=[("red", None), ("green", 1)],
                options={"graphMode": "none"},
                description="Scrape health of the service's /metrics (ModelServiceDown pages after 2 minutes at 0).",
            ),
            bargauge(
                "Features drifting per model",
                [
                    Query(
                        drifting("model_feature"),
                        "{{model_name}} {{model_version}}",
                    )
                ],
                width=6,
                thresholds=[("green", None), ("red", 1)],
                description="Features whose chi2 test is significant and whose effect is at least 0.05 "
                "(ModelFeatureDrift, before its 15 minutes).",
                links=[
                    {
                        "title": "Model health",
                        "url": f"/d/{MODEL_UID}/model-health?${{__url_time_range}}&${{job:queryparam}}",
                    }
                ],
            ),
            bargauge(
                "Prediction drift per model",
                [
                    Query(
                        drifting("model_prediction"),
                        "{{model_name}} {{model_version}}",
                    )
                ],
                width=6,
                thresholds=[("green", None), ("red", 1)],
                description="1 when the model's output distribution has drifted (significant, effect at least 0.05).",
            ),
            bargauge(
                "Rejected rows (10m)",
                [Query('job_model:model_rows_rejected:ratio_rate10m{job="$job"}', "{{model_name}} {{model_version}}")],
                unit="percentunit",
                width=6,
                thresholds=[("green", None), ("red", 0.05)],
            ),
            stat(
                "Model age",
                [
                    Query(
                        'max by (model_name, model_version) (model_age_seconds{job="$job"})',
                        "{{model_name}} {{model_version}}",
                    )
                ],
                unit="s",
                width=6,
                thresholds=[("green", None), ("orange", 20 * 86400), ("red", 30 * 86400)],
                options={"graphMode": "none"},
            ),
            stat(
                "Prediction log failing",
                [Query('max by (instance) (prediction_log_failing{job="$job"})', "{{instance}}")],
                width=6,
                thresholds=[("green", None), ("red", 1)],
                options={"graphMode": "none"},
                description="1 while a worker's prediction log cannot write (PredictionLogFailing): predictions "
                "are served and queued, /feedback answers 503.",
            ),
            timeseries(
                "Prediction log: queued and not logged",
                [
                    Query('sum by (instance) (prediction_log_queue_depth{job="$job"})', "{{instance}} queued rows"),
                    Query(
                        'sum by (instance) (rate(prediction_log_dropped_total{job="$job", record="prediction"}'
                        "[$__rate_interval]))",
                        "{{instance}} not logged/s",
                    ),
                ],
                width=12,
                description="Rows waiting for the log's writer, and predictions served but not logged "
                "(PredictionLogDropping): their labels will never join.",
            ),
            Row("Telemetry pipeline"),
            stat(
                "Collector up",
                [Query('up{job="otel-collector"}', "{{instance}}")],
                width=4,
                thresholds=[("red", None), ("green", 1)],
                options={"graphMode": "none"},
            ),
            timeseries(
                "Collector: items sent per second",
                [
                    Query(
                        f"sum by (exporter) (rate(otelcol_exporter_sent_{kind}_total[$__rate_interval]))",
                        f"{{{{exporter}}}} {kind}",
                    )
                    for kind in ("metric_points", "spans", "log_records")
                ],
                width=7,
            ),
            timeseries(
                "Collector: failed sends per second",
                [
                    Query(
                        f"sum by (exporter) (rate(otelcol_exporter_send_failed_{kind}_total[$__rate_interval]))",
                        f"{{{{exporter}}}} {kind}",
                    )
                    for kind in ("metric_points", "spans", "log_records")
                ],
                width=7,
            ),
            bargauge(
                "Collector: exporter queue usage",
                [
                    Query(
                        "max by (exporter) (otelcol_exporter_queue_size)"
                        " / max by (exporter) (otelcol_exporter_queue_capacity)",
                        "{{exporter}}",
                    )
                ],
                unit="percentunit",
                max=1,
                width=6,
                thresholds=[("green", None), ("orange", 0.5), ("red", 0.9)],
            ),
            Row("Traces and logs"),
            Panel(
                "table",
                "Slow /predict traces (over 250 ms)",
                datasource=TEMPO,
                width=12,
                height=9,
                raw_targets=[
                    {
                        "refId": "A",
                        "datasource": TEMPO,
                        "queryType": "traceql",
                        "query": SLOW_PREDICT_TRACES,
                        "limit": 20,
                        "tableType": "traces",
                    }
                ],
                description="Tempo TraceQL: click a trace id to open it; the trace links to its logs.",
            ),
            Panel(
                "logs",
                "Error logs",
                datasource=LOKI,
                width=12,
                height=9,
                raw_targets=[
                    {"refId": "A", "datasource": LOKI, "expr": ERROR_LOGS, "queryType": "range", "editorMode": "code"}
                ],
                description="ERROR and CRITICAL lines; open a line and click 'View trace'.",
            ),
        ],
    )


DASHBOARDS = {"service-overview.json": _service_overview, "model-health.json": _model_health, "oncall.json": _oncall}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        name: json.dumps(build().to_json(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a JSON file differs from what this script builds"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, content in render().items():
        path = OUTPUT_DIR / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != content:
                stale.append(name)
        else:
            OUTPUT_DIR.mkdir(exist_ok=True)
            path.write_text(content, encoding="utf-8")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python grafana/build_dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
