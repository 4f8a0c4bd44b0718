"""Grafana Explore links to the provisioned data sources (fixed uids `prometheus`, `tempo`, `loki`)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["explore_url"]


def explore_url(grafana: str, datasource: str, query: dict[str, Any], start: float, end: float) -> str:
    """An Explore URL (`/explore?schemaVersion=1&panes=...`) with one pane querying `datasource` over [start, end].

    `datasource` is both the uid and the type: grafana/provisioning/datasources gives each source its type as uid.
    `query` holds the data source's own fields: `{"queryType": "traceql", "query": trace_id}` for Tempo,
    `{"expr": logql, "queryType": "range"}` for Loki, `{"expr": promql, "range": True}` for Prometheus.
    """
    pane = {
        "datasource": datasource,
        "queries": [{"refId": "A", "datasource": {"type": datasource, "uid": datasource}, **query}],
        "range": {"from": str(int(start * 1000)), "to": str(int(end * 1000))},
    }
    panes = json.dumps({"triage": pane}, separators=(",", ":"))
    query_string = urlencode({"schemaVersion": 1, "panes": panes, "orgId": 1}, quote_via=quote, safe=":,")
    return f"{grafana.rstrip('/')}/explore?{query_string}"
