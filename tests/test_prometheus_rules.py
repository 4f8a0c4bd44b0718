"""Prometheus config, recording and alerting rules: promtool checks and unit tests, and one runbook per alert.

promtool here is Debian's 2.42; the compose stack runs Prometheus 3.x. promtool validates everything except the
`otlp:` block, which 2.x does not know: the config test checks a copy without that block, and a separate test
checks the block's keys and values against Prometheus 3.x's configuration reference
(prometheus/prometheus docs/configuration/configuration.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel.metrics import SECONDS_BUCKETS

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = REPO / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yaml"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))
DASHBOARD_PROVISIONING = REPO / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
RUNBOOKS_DIR = REPO / "docs" / "runbooks"
METRICS_DOC = REPO / "docs" / "metrics.md"
PROMTOOL = "/usr/bin/promtool"
YAMLLINT = Path(sys.executable).parent / "yamllint"

RUNBOOK_URL = "https://github.com/modellens/modellens/blob/main/docs/runbooks/{alert}.md"
SEVERITIES = {"page", "ticket", "warning"}
RUNBOOK_SECTIONS = (
    "Meaning",
    "Impact",
    "Dashboards",
    "From exemplar to trace to logs",
    "Confirm with PromQL",
    "Likely causes",
    "Mitigation",
    "Triage command",
)

# Prometheus 3.x only. The `otlp` keys and translation strategies as the 3.x configuration reference lists them.
THREE_X_ONLY_BLOCKS = ("otlp",)
OTLP_KEYS_3X = {
    "promote_resource_attributes",
    "promote_all_resource_attributes",
    "ignore_resource_attributes",
    "translation_strategy",
    "keep_identifying_resource_attributes",
    "convert_histograms_to_nhcb",
    "promote_scope_metadata",
    "label_name_underscore_sanitization",
    "label_name_preserve_multiple_underscores",
}
TRANSLATION_STRATEGIES_3X = {
    "UnderscoreEscapingWithSuffixes",
    "UnderscoreEscapingWithoutSuffixes",
    "NoUTF8EscapingWithSuffixes",
    "NoTranslation",
}
PROMOTED_ATTRIBUTES = ["service.name", "service.instance.id", "service.version", "deployment.environment.name"]
SCRAPE_TARGETS = {
    "prometheus": "localhost:9090",
    "otel-collector": "otel-collector:8888",
    "modellens-scrape": "model:8000",
}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).is_file():
        pytest.fail(f"{PROMTOOL} not found: `make system-deps` installs Debian's prometheus package")
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=300, check=False)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules_in(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load(path)["groups"] for rule in group["rules"]]


@cache
def alerts() -> tuple[tuple[str, Path], ...]:
    return tuple((rule["alert"], path) for path in RULE_FILES for rule in rules_in(path) if "alert" in rule)


def alert(name: str) -> dict[str, Any]:
    return next(rule for path in RULE_FILES for rule in rules_in(path) if rule.get("alert") == name)


@cache
def unit_test_outcomes() -> dict[str, set[bool]]:
    """Alert name -> the outcomes its `promtool test rules` cases expect (True: fires, False: stays silent)."""
    outcomes: dict[str, set[bool]] = {}
    for path in RULE_TEST_FILES:
        for test in load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                outcomes.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    return outcomes


def runbook_sections(path: Path) -> dict[str, str]:
    sections: dict[str, str] = {}
    current = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = ""
        elif current:
            sections[current] += line + "\n"
    return sections


def documented_metrics() -> set[str]:
    """Prometheus names in the tables of docs/metrics.md."""
    return set(re.findall(r"^\| `([a-z_]+)` \|", METRICS_DOC.read_text(encoding="utf-8"), flags=re.MULTILINE))


# --- tests -------------------------------------------------------------------------------------------------------
class TestConfig:
    """prometheus/prometheus.yaml: valid for promtool where promtool can judge, and as documented where it cannot."""

    def test_promtool_accepts_the_config_without_its_3x_only_blocks(self, tmp_path: Path) -> None:
        config = {key: value for key, value in load(CONFIG).items() if key not in THREE_X_ONLY_BLOCKS}
        (tmp_path / "rules").symlink_to(RULES_DIR)  # rule_files are relative to the config file
        (tmp_path / CONFIG.name).write_text(yaml.safe_dump(config), encoding="utf-8")
        result = promtool("check", "config", tmp_path / CONFIG.name)
        assert result.returncode == 0, result.stdout + result.stderr
        for path in RULE_FILES:  # the rule_files glob reaches every rules file, and each is valid
            assert f"rules/{path.name}" in result.stdout

    def test_only_the_3x_blocks_stop_promtool_2(self) -> None:
        """Debian's promtool 2.42 rejects the full file for the `otlp` key alone (promtool 3.x accepts it)."""
        result = promtool("check", "config", CONFIG)
        if result.returncode == 0:
            return
        unknown = set(re.findall(r"field (\w+) not found", result.stdout + result.stderr))
        assert unknown == set(THREE_X_ONLY_BLOCKS), result.stdout + result.stderr

    def test_otlp_block_uses_documented_3x_keys(self) -> None:
        otlp = load(CONFIG)["otlp"]
        assert set(otlp) <= OTLP_KEYS_3X, set(otlp) - OTLP_KEYS_3X
        # docs/metrics.md, the rules and the dashboards assume this translation (unit and _total suffixes).
        assert otlp["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
        assert otlp["translation_strategy"] in TRANSLATION_STRATEGIES_3X
        assert otlp["promote_resource_attributes"] == PROMOTED_ATTRIBUTES

    def test_storage_settings(self) -> None:
        storage = load(CONFIG)["storage"]
        assert storage["tsdb"] == {"out_of_order_time_window": "30m"}
        assert isinstance(storage["exemplars"]["max_exemplars"], int) and storage["exemplars"]["max_exemplars"] > 0

    def test_scrape_jobs_and_the_mirror_label(self) -> None:
        config = load(CONFIG)
        assert config["rule_files"] == ["rules/*.yml"]
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        targets = {name: [t for s in job["static_configs"] for t in s["targets"]] for name, job in jobs.items()}
        assert targets == {name: [target] for name, target in SCRAPE_TARGETS.items()}
        # The service's /metrics mirrors the OTLP path in the stack: the rules skip it (mirror="" in selectors).
        assert jobs["modellens-scrape"]["static_configs"][0]["labels"] == {"mirror": "otlp"}
        assert jobs["modellens-scrape"]["metrics_path"] == "/metrics"

    def test_yamllint_is_clean(self) -> None:
        files = [CONFIG, *RULE_FILES, *RULE_TEST_FILES, DASHBOARD_PROVISIONING]
        result = subprocess.run(
            [str(YAMLLINT), "--strict", "-f", "parsable", *map(str, files)],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
        )
        assert result.returncode == 0, result.stdout + result.stderr


class TestRules:
    """Every rules file passes promtool, and every unit-test file passes `promtool test rules`."""

    @pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
    def test_promtool_check_rules(self, path: Path) -> None:
        result = promtool("check", "rules", path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(rules_in(path))} rules found" in result.stdout

    @pytest.mark.parametrize("path", RULE_TEST_FILES, ids=lambda p: p.name)
    def test_promtool_unit_tests(self, path: Path) -> None:
        result = promtool("test", "rules", path)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_service_metrics_are_read_from_the_primary_path_only(self) -> None:
        """Every selector of a service metric in the rules skips the scrape mirror (mirror="")."""
        service_metrics = {
            name for name in documented_metrics() if name.startswith(("http_server_", "model_", "prediction_log_"))
        }
        names = "|".join(sorted(service_metrics, key=len, reverse=True))
        selector = re.compile(rf"(?<![\w:])({names})(_bucket|_sum|_count)?(?![\w:])\s*(\{{[^}}]*\}})?")
        checked = 0
        for path in RULE_FILES:
            for rule in rules_in(path):
                for match in selector.finditer(rule["expr"]):
                    assert match.group(3) and 'mirror=""' in match.group(3), f"{path.name}: {match.group(0)}"
                    checked += 1
        assert checked >= 30

    def test_slo_threshold_is_a_histogram_bucket_boundary(self) -> None:
        """A histogram only answers "how many under 250 ms" if 0.25 s is one of its bucket boundaries."""
        thresholds = {
            le
            for rule in rules_in(RULES_DIR / "serving.rules.yml")
            for le in re.findall(r'le="([\d.]+)"', rule["expr"])
        }
        assert thresholds == {"0.25"}
        assert 0.25 in SECONDS_BUCKETS


class TestAlerts:
    """Every alert is labelled, annotated, documented by a runbook, and unit-tested both ways."""

    def test_alert_names_are_unique(self) -> None:
        names = [name for name, _ in alerts()]
        assert len(names) >= 12
        assert len(names) == len(set(names))

    @pytest.mark.parametrize("name", [name for name, _ in alerts()])
    def test_labels_and_annotations(self, name: str) -> None:
        rule = alert(name)
        assert rule["labels"]["severity"] in SEVERITIES
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}
        assert "{{" in annotations["description"], "the description should say which series and which value"
        assert annotations["runbook_url"] == RUNBOOK_URL.format(alert=name)

    @pytest.mark.parametrize("name", [name for name, _ in alerts()])
    def test_runbook_has_every_section(self, name: str) -> None:
        path = RUNBOOKS_DIR / f"{name}.md"
        assert path.is_file(), f"missing runbook {path.relative_to(REPO)}"
        assert path.read_text(encoding="utf-8").startswith(f"# {name}\n")
        sections = runbook_sections(path)
        for section in RUNBOOK_SECTIONS:
            assert sections.get(section, "").strip(), f"{path.name}: section '## {section}' is missing or empty"
        assert "```promql" in sections["Confirm with PromQL"]
        assert "modellens triage --prometheus URL --since 30m" in sections["Triage command"]

    def test_every_runbook_belongs_to_an_alert(self) -> None:
        assert {path.stem for path in RUNBOOKS_DIR.glob("*.md")} == {name for name, _ in alerts()}

    @pytest.mark.parametrize("name", [name for name, _ in alerts()])
    def test_unit_tests_cover_firing_and_not_firing(self, name: str) -> None:
        assert unit_test_outcomes().get(name) == {True, False}, unit_test_outcomes().get(name)
