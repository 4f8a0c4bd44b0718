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
from service.artifact.profile import ReferenceProfile
from service.artifact.training import to_matrix
from service.monitoring.drift import DRIFT_EFFECT, PSI_EPSILON
from service.monitoring.multivariate import DRIFT_EFFECT as MULTIVARIATE_DRIFT_EFFECT
from service.monitoring.multivariate import critical_z
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


def _send(port: int, card: ModelCard, traffic: np.ndarray) -> dict:
    """POST `traffic` to the service in 30 requests; its `GET /monitoring` afterwards."""
    with requests.Session() as http:
        for chunk in np.array_split(traffic, 30):
            instances = [dict(zip(card.feature_names, row.tolist(), strict=True)) for row in chunk]
            http.post(f"http://127.0.0.1:{port}/predict", json={"instances": instances}, timeout=10).raise_for_status()
        return http.get(f"http://127.0.0.1:{port}/monitoring", timeout=10).json()


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
        summary = _send(port, card, traffic)
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


def test_multivariate_rules_in_process_and_numpy_agree(regression_model_dir: Path) -> None:
    """The multivariate recording rules over a real scrape: the same mean error, z and decision as numpy computes
    from the rows sent, and as the service decides in process (docs/metrics.md, "Multivariate drift")."""
    card = ModelCard.load(regression_model_dir)
    reference = ReferenceProfile.load(regression_model_dir).multivariate
    assert reference is not None
    rows = to_matrix(load_bundled("diabetes").frame, card).astype(np.float64)
    rng = np.random.default_rng(12)
    traffic = rows[rng.integers(0, len(rows), 600)]
    column = card.feature_names.index("s2")  # correlated 0.9 with s1 in training; shuffled, its marginal stays
    traffic[:, column] = rng.permutation(traffic[:, column])
    port = free_port()
    with (
        serve(regression_model_dir, port, None, MODELLENS_DRIFT_WINDOW="1h") as _service,
        PrometheusServer([("modellens", f"127.0.0.1:{port}", "/metrics")], rule_files=[RULES]) as prometheus,
    ):
        prometheus.wait_for_scrapes(2)
        in_process = _send(port, card, traffic)["multivariate"]
        prometheus.wait_for(
            "sum(model_multivariate_rows_total)", lambda r: bool(r) and float(r[0]["value"][1]) == len(traffic)
        )
        prometheus.wait_for_scrapes(2)
        time.sleep(1.5)  # one more rule evaluation after the last scrape
        mean = prometheus.wait_for("model:multivariate_error:mean5m", lambda r: len(r) == 1)
        n = float(prometheus.query("model:multivariate_rows:increase5m")[0]["value"][1])
        z_rule = float(prometheus.query("model:multivariate_z:increase5m")[0]["value"][1])
        critical_rule = float(prometheus.query("model:multivariate_critical_z:increase5m")[0]["value"][1])
        effect_rule = float(prometheus.query("model:multivariate_effect:increase5m")[0]["value"][1])
        significant = prometheus.query("model:multivariate_significant:increase5m")

    errors = reference.errors(traffic)
    # Both counters start at 0 inside the window, so increase() extrapolates them alike: their ratio is exact.
    assert float(mean[0]["value"][1]) == pytest.approx(errors.mean(), rel=1e-9)
    direct_z = (errors.mean() - reference.error_mean) / (reference.error_std * np.sqrt(1 / n + 1 / reference.rows))
    assert z_rule == pytest.approx(direct_z, rel=1e-9)
    assert critical_rule == pytest.approx(critical_z(reference.error_skewness, n), rel=1e-9)
    assert effect_rule == pytest.approx(errors.mean() / reference.error_mean - 1, rel=1e-9)
    # In process, over the whole 1h window: every row sent, the same numbers to the JSON's 6 decimals.
    assert in_process["window_rows"] == len(traffic)
    assert in_process["error"] == pytest.approx(errors.mean(), abs=1e-6)
    assert in_process["status"] == "drift"
    assert significant and effect_rule >= MULTIVARIATE_DRIFT_EFFECT  # the alert's condition holds


def test_label_rules_in_process_and_numpy_agree(regression_model_dir: Path) -> None:
    """The label drift rules over a real scrape: the statistic scipy computes from the same bins, and the same
    decision as the service's over its label window (docs/metrics.md, "Label drift")."""
    card = ModelCard.load(regression_model_dir)
    dataset = load_bundled("diabetes")
    rows = to_matrix(dataset.frame, card)
    picked = np.random.default_rng(13).integers(0, len(rows), 300)
    actuals = dataset.target.to_numpy()[picked] * 1.3  # the target's level rose by 30 %
    port = free_port()
    with (
        serve(regression_model_dir, port, None) as _service,
        PrometheusServer([("modellens", f"127.0.0.1:{port}", "/metrics")], rule_files=[RULES]) as prometheus,
        requests.Session() as http,
    ):
        prometheus.wait_for_scrapes(2)
        instances = [dict(zip(card.feature_names, row.tolist(), strict=True)) for row in rows[picked]]
        ids = http.post(f"http://127.0.0.1:{port}/predict", json={"instances": instances}, timeout=10).json()
        for chunk in np.array_split(np.arange(len(picked)), 10):
            labels = [{"prediction_id": ids["prediction_ids"][i], "actual": float(actuals[i])} for i in chunk]
            http.post(f"http://127.0.0.1:{port}/feedback", json={"feedback": labels}, timeout=10).raise_for_status()
        in_process = http.get(f"http://127.0.0.1:{port}/monitoring", timeout=10).json()["label_drift"]
        prometheus.wait_for(
            "sum(model_label_observations_total)", lambda r: bool(r) and float(r[0]["value"][1]) == len(picked)
        )
        prometheus.wait_for_scrapes(2)
        time.sleep(1.5)  # one more rule evaluation after the last scrape
        chi2_rule = prometheus.wait_for("model_label:chi2:increase1h", lambda r: len(r) == 1)
        window = prometheus.query("model_label_bin:observations:increase1h")
        reference_rows = prometheus.query("model_label_bin:reference_rows:max")
        effect_rule = float(prometheus.query("model_label:drift_effect:increase1h")[0]["value"][1])
        significant = prometheus.query("model_label:drift_significant:increase1h")

    def by_bin(result: list[dict]) -> dict[str, float]:
        return {r["metric"]["bin"]: float(r["value"][1]) for r in result}

    r = by_bin(reference_rows)
    assert float(chi2_rule[0]["value"][1]) == pytest.approx(_scipy_chi2(r, by_bin(window)), rel=1e-9)
    # In process: every label, in the profile's bin order, and scipy's statistic on those counts.
    target = ReferenceProfile.load(regression_model_dir).target
    assert target is not None
    assert in_process["labels"] == len(picked) and sum(in_process["window_counts"]) == len(picked)
    counts = dict(zip(target.labels, map(float, in_process["window_counts"]), strict=True))
    assert in_process["test"]["statistic"] == pytest.approx(_scipy_chi2(r, counts), abs=1e-6)
    assert in_process["status"] == "drift"
    assert significant and effect_rule >= DRIFT_EFFECT  # the alert's condition holds
