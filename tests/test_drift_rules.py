"""The shipped drift recording rules, evaluated by a real Prometheus scraping the real service, agree with the
service's in-process scores and with a direct numpy/scipy computation on the same bins."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import requests
from scipy.spatial.distance import jensenshannon

from service.artifact.card import ModelCard
from service.artifact.datasets import load_bundled
from service.artifact.training import to_matrix
from service.monitoring.drift import PSI_EPSILON
from tests.support.ports import free_port
from tests.support.prometheus import PrometheusServer
from tests.test_serving import serve

pytestmark = pytest.mark.slow
RULES = Path(__file__).resolve().parent.parent / "prometheus" / "rules" / "drift.rules.yml"
SHIFTED = "bmi"


def _by_feature(result: list[dict]) -> dict[str, float]:
    return {r["metric"]["feature"]: float(r["value"][1]) for r in result}


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
        if spec.name == SHIFTED:
            assert psi_rule[spec.name] > 0.25
            assert js_rule[spec.name] > 0.1
        else:
            assert psi_rule[spec.name] < 0.1, spec.name
