"""Grafana dashboards and their provisioning: generated JSON up to date, uids and links consistent.

The PromQL inside the dashboards runs against a real Prometheus in tests/test_promql.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import urllib.parse
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from service.monitoring.drift import DRIFT_EFFECT

REPO = Path(__file__).resolve().parent.parent
GRAFANA_DIR = REPO / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
BUILDER = GRAFANA_DIR / "build_dashboards.py"
DASHBOARD_PROVISIONING = GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yaml"
DATASOURCE_PROVISIONING = GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yaml"
COMPOSE = REPO / "docker-compose.yml"
RUNBOOKS_DIR = REPO / "docs" / "runbooks"

DATASOURCES = {"prometheus": "prometheus", "tempo": "tempo", "loki": "loki"}  # uid -> plugin type
DASHBOARD_FILES = {
    "oncall.json": "On-call",
    "service-overview.json": "Service overview",
    "model-health.json": "Model health",
}
# Variables Grafana defines itself (https://grafana.com/docs/grafana/latest/dashboards/variables/add-template-variables/).
GLOBAL_VARIABLES = {"__rate_interval", "__interval", "__range", "__url_time_range", "__from", "__to", "__all"}
Json = dict[str, Any]


@cache
def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_build_dashboards", BUILDER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@cache
def dashboards() -> dict[str, Json]:
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def walk(node: Any) -> Iterator[Json]:
    """Every JSON object inside `node`, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def panels(dashboard: Json) -> Iterator[Json]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def link_urls(dashboard: Json) -> Iterator[str]:
    for node in walk(dashboard):
        url = node.get("url")
        if isinstance(url, str):
            yield url


def explore_panes(url: str) -> list[Json]:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    return list(json.loads(query["panes"][0]).values()) if "panes" in query else []


class TestGeneratedJson:
    """The JSON files are exactly what grafana/build_dashboards.py builds."""

    def test_every_dashboard_file_is_generated(self) -> None:
        assert set(dashboards()) == set(DASHBOARD_FILES) == set(builder().DASHBOARDS)

    def test_json_is_up_to_date(self) -> None:
        rendered = builder().render()
        for name, content in rendered.items():
            assert (DASHBOARDS_DIR / name).read_text(encoding="utf-8") == content, (
                f"{name} is out of date: run `python grafana/build_dashboards.py` and commit the JSON"
            )

    def test_check_mode_agrees(self) -> None:
        assert builder().main(["--check"]) == 0


class TestDashboards:
    """Fixed uids, data sources by uid only, variables defined, exemplars on latency, a sane grid."""

    def test_uids_are_fixed_and_unique(self) -> None:
        uids = [dashboard["uid"] for dashboard in dashboards().values()]
        assert sorted(uids) == ["modellens-model", "modellens-oncall", "modellens-service"]
        for dashboard in dashboards().values():
            assert dashboard["id"] is None and dashboard["schemaVersion"] >= 41

    @pytest.mark.parametrize("name", sorted(DASHBOARD_FILES))
    def test_every_datasource_is_a_provisioned_uid(self, name: str) -> None:
        references = [node["datasource"] for node in walk(dashboards()[name]) if "datasource" in node]
        assert references
        for reference in references:
            if isinstance(reference, str):  # an Explore pane names its data source by uid
                assert reference in DATASOURCES
                continue
            assert set(reference) == {"type", "uid"}, reference
            assert DATASOURCES.get(reference["uid"]) == reference["type"], reference

    @pytest.mark.parametrize("name", sorted(DASHBOARD_FILES))
    def test_every_link_target_exists(self, name: str) -> None:
        uids = {dashboard["uid"] for dashboard in dashboards().values()}
        urls = list(link_urls(dashboards()[name]))
        linked = {match.group(1) for url in urls if (match := re.match(r"^/d/([\w-]+)", url))}
        assert linked and linked <= uids, linked - uids
        assert linked == uids - {dashboards()[name]["uid"]}, "every dashboard links to both others"
        panes = [pane for url in urls if url.startswith("/explore?") for pane in explore_panes(url)]
        assert {pane["datasource"] for pane in panes} == set(DATASOURCES), "Explore links for all three sources"
        for url in urls:
            assert url.startswith(("/d/", "/explore?", "https://github.com/modellens/modellens/")), url

    @pytest.mark.parametrize("name", sorted(DASHBOARD_FILES))
    def test_every_variable_used_is_defined(self, name: str) -> None:
        dashboard = dashboards()[name]
        defined = {variable["name"] for variable in dashboard["templating"]["list"]}
        texts = [
            target.get("expr") or target.get("query") or ""
            for panel in panels(dashboard)
            for target in panel.get("targets", [])
        ]
        texts += [variable["definition"] for variable in dashboard["templating"]["list"]]
        texts += [urllib.parse.unquote(url) for url in link_urls(dashboard)]
        used = {match for text in texts for match in re.findall(r"\$\{?(\w+)", text)}
        assert used - GLOBAL_VARIABLES <= defined, used - GLOBAL_VARIABLES - defined

    @pytest.mark.parametrize("name", sorted(DASHBOARD_FILES))
    def test_latency_panels_show_exemplars(self, name: str) -> None:
        checked = 0
        for panel in panels(dashboards()[name]):
            for target in panel.get("targets", []):
                # Time series of request or inference latency (instant stats cannot show exemplars).
                latency = not target.get("instant") and any(
                    f"{metric}_seconds_bucket" in target.get("expr", "")
                    for metric in ("http_server_request_duration", "model_inference_duration")
                )
                if latency or "(exemplars)" in panel["title"]:
                    assert target["exemplar"] is True, f"{panel['title']}: {target['expr']}"
                    checked += 1
        assert checked, "every dashboard has a latency panel with exemplars"

    @pytest.mark.parametrize("name", sorted(DASHBOARD_FILES))
    def test_panel_ids_and_grid(self, name: str) -> None:
        all_panels = list(panels(dashboards()[name]))
        ids = [panel["id"] for panel in all_panels]
        assert len(ids) == len(set(ids))
        titles = [panel["title"] for panel in all_panels if panel["type"] != "row"]
        assert len(titles) == len(set(titles)), "runbooks refer to panels by title"
        for panel in all_panels:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]

    def test_drift_panels_turn_red_at_the_services_effect(self) -> None:
        """A drift panel colours red exactly where the service and the alerts say `drift`, not at a fixed PSI."""
        alerts = (REPO / "prometheus" / "rules" / "alerts.rules.yml").read_text(encoding="utf-8")
        assert f"model_feature:drift_effect:rate5m >= {DRIFT_EFFECT}" in alerts
        checked = 0
        for dashboard in dashboards().values():
            for panel in panels(dashboard):
                exprs = " ".join(target.get("expr", "") for target in panel.get("targets", []))
                assert ":psi:" not in exprs, f"{panel['title']}: raw PSI grows as windows shrink; show the effect"
                if "drift_effect" in exprs and "count by" not in exprs:
                    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
                    assert [step["value"] for step in steps if step["color"] == "red"] == [DRIFT_EFFECT]
                    checked += 1
        assert checked >= 4


class TestProvisioning:
    """The dashboard provider reads the directory compose mounts, and every data source uid is provisioned."""

    def test_provider_reads_the_directory_compose_mounts(self) -> None:
        (provider,) = yaml.safe_load(DASHBOARD_PROVISIONING.read_text(encoding="utf-8"))["providers"]
        assert provider["type"] == "file"
        volumes = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["grafana"]["volumes"]
        mounts = [v.split(":") for v in volumes if isinstance(v, str) and v.startswith("./grafana/dashboards:")]
        assert mounts, "docker-compose.yml does not mount ./grafana/dashboards into Grafana"
        assert provider["options"]["path"] == mounts[0][1]

    def test_every_datasource_uid_is_provisioned(self) -> None:
        provisioned = yaml.safe_load(DATASOURCE_PROVISIONING.read_text(encoding="utf-8"))["datasources"]
        assert {source["uid"]: source["type"] for source in provisioned} == DATASOURCES

    def test_runbooks_name_existing_panels(self) -> None:
        """Runbooks point at panels as **Dashboard › Panel title**; each must exist."""
        titles = {
            DASHBOARD_FILES[name]: {panel["title"] for panel in panels(dashboard)}
            for name, dashboard in dashboards().items()
        }
        references = 0
        for runbook in sorted(RUNBOOKS_DIR.glob("*.md")):
            text = " ".join(runbook.read_text(encoding="utf-8").split())  # references may wrap across lines
            for dashboard, title in re.findall(r"\*\*(On-call|Service overview|Model health) › (.+?)\*\*", text):
                assert title in titles[dashboard], f"{runbook.name}: no panel '{title}' on {dashboard}"
                references += 1
        assert references >= 30
