"""The shipped drift recording rules, evaluated by a real Prometheus scraping the real service, agree with the
service's in-process scores and with a direct numpy/scipy computation on the same bins."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import requests
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency

from service.artifact.card import ModelCard
from service.artifact.datasets import load_bundled
from service.artifact.training import to_matrix
from service.monitoring.drift import DRIFT_EFFECT, PSI_EPSILON
from tests.support.ports import free_port
from tests.support.prometheus import PrometheusServer
from tests.test_serving import serve

pytestmark = pytest.mark.slow
RULES = Path(__file__).resolve().parent.parent / "prometheus" / "rules" / "drift.rules.yml"
SHIFTED = "bmi"


def _by_feature(result: list[dict]) -> dict[str, float]:
    return {r["metric"]["feature"]: float(r["value"][1]) for r in result}


def _bins(result: list[dict], feature: str) -> dict[str, float]:
    return {r["metric"]["bin"]: float(r["value"][1]) for r in result if r["metric"]["feature"] == feature}


def _scipy_chi2(reference: dict[str, float], window: dict[str, float]) -> float:
    """Pearson's chi2 of the 2 × bins table, by scipy, over the bins either side has."""
    labels = [label for label in sorted(reference) if reference[label] + window.get(label, 0.0) > 0]
    table = np.array([[reference[label] for label in labels], [window.get(label, 0.0) for label in labels]])
    return float(chi2_contingency(table, correction=False).statistic)


def test_rules_in_process_and_numpy_agree(regression_model_dir: Path) -> None:
    card = ModelCard.load(regression_model_dir)
    rows = to_matrix(load_bundled("diabetes").frame, card)
    traffic = rows[np.random.default_rng(11).integers(0, len(rows), 600)]
    column = card.feature_names.index(SHIFTED)
    traffic[:, column] += rows[:, column].std()
    port = free_port()
    with (
        serve(regression_model_dir, port, None, MODELLENS_DRIFT_WINDOW="1h", MODELLENS_SLICES="sex") as _service,
        PrometheusServer([("modellens", f"127.0.0.1:{port}", "/metrics")], rule_files=[RULES]) as prometheus,
    ):
        # Scrapes of the all-zero counters first, as in production: rate() then sees every bin from 0.
        prometheus.wait_for_scrapes(2)
        with requests.Session() as http:
            for chunk in np.array_split(traffic, 30):
                instances = [dict(zip(card.feature_names, row.tolist(), strict=True)) for row in chunk]
                http.post(
                    f"http://127.0.0.1:{port}/predict", json={"instances": instances}, timeout=10
                ).raise_for_status()
            summary = http.get(f"http://127.0.0.1:{port}/monitoring", timeout=10).json()
        prometheus.wait_for(
            "sum(increase(model_prediction_observations_total[5m]))",
            lambda r: bool(r) and float(r[0]["value"][1]) > 0,
        )
        prometheus.wait_for_scrapes(2)
        time.sleep(1.5)  # one more rule evaluation after the last scrape
        psi_rule = _by_feature(prometheus.wait_for("model_feature:psi:rate5m", lambda r: len(r) == len(card.features)))
        js_rule = _by_feature(prometheus.query("model_feature:js_distance:rate5m"))
        counts = prometheus.query("sum by (feature, bin) (model_feature_observations_total)")
        reference = prometheus.query("max by (feature, bin) (model_feature_reference_ratio)")
        chi2_rule = _by_feature(prometheus.query("model_feature:chi2:increase5m"))
        effect_rule = _by_feature(prometheus.query("model_feature:drift_effect:rate5m"))
        significant = _by_feature(prometheus.query("model_feature:drift_significant:increase5m"))
        critical = _by_feature(prometheus.query("model_feature:drift_critical_value:max"))
        window = prometheus.query("model_feature_bin:observations:increase5m")
        reference_rows = prometheus.query("model_feature_bin:reference_rows:max")

    for spec in card.features:
        in_process = summary["features"][spec.name]
        bins = {r["metric"]["bin"]: float(r["value"][1]) for r in counts if r["metric"]["feature"] == spec.name}
        shares = {r["metric"]["bin"]: float(r["value"][1]) for r in reference if r["metric"]["feature"] == spec.name}
        labels = sorted(bins)
        q = np.array([bins[label] for label in labels])
        p = np.array([shares[label] for label in labels])
        q_share = q / q.sum()
        p_floor, q_floor = np.maximum(p, PSI_EPSILON), np.maximum(q_share, PSI_EPSILON)
        direct_psi = float(np.sum((q_floor - p_floor) * np.log(q_floor / p_floor)))
        direct_js = float(jensenshannon(p, q_share))
        # The service rounds its JSON to 6 decimals; Prometheus and numpy agree to floating-point error.
        assert psi_rule[spec.name] == pytest.approx(direct_psi, rel=1e-9, abs=1e-12), spec.name
        assert js_rule[spec.name] == pytest.approx(direct_js, rel=1e-9, abs=1e-12), spec.name
        assert in_process["psi"] == pytest.approx(direct_psi, abs=1e-6), spec.name
        assert in_process["js_distance"] == pytest.approx(direct_js, abs=1e-6), spec.name
        # The test: scipy's contingency-table chi2 on the same counts (increase() in PromQL extrapolates to the
        # window's edges, so the rule is checked on its own window counts, the service on its raw totals).
        r = _bins(reference_rows, spec.name)
        w = _bins(window, spec.name)
        assert chi2_rule[spec.name] == pytest.approx(_scipy_chi2(r, w), rel=1e-9), spec.name
        raw = np.array([bins[label] for label in sorted(r)])
        assert in_process["test"]["statistic"] == pytest.approx(
            _scipy_chi2(r, dict(zip(sorted(r), raw, strict=True))), abs=1e-6
        ), spec.name
        assert in_process["test"]["critical_value"] == pytest.approx(critical[spec.name], abs=1e-6)
        # The same decision, unless the statistic is within the extrapolation's reach of the critical value.
        promql_status = "stable"
        if spec.name in significant:
            promql_status = "drift" if effect_rule[spec.name] >= DRIFT_EFFECT else "warn"
        if abs(in_process["test"]["statistic"] / critical[spec.name] - 1) > 0.1:
            assert in_process["status"] == promql_status, spec.name
        if spec.name == SHIFTED:
            assert in_process["status"] == promql_status == "drift"
            assert psi_rule[spec.name] > 0.25
