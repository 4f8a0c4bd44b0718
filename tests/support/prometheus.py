"""A real Prometheus server (Debian's ``/usr/bin/prometheus``) on a loopback port, for integration tests."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from .ports import LOOPBACK, free_port
from .processes import ServiceProcess, ServiceStartError

__all__ = ["PROMETHEUS_BINARY", "PrometheusError", "PrometheusServer", "ScrapeTarget"]

PROMETHEUS_BINARY = "/usr/bin/prometheus"
ScrapeTarget = tuple[str, str, str]
"""``(job_name, "127.0.0.1:port", metrics_path)``."""

_START_ATTEMPTS = 3
_POLL_INTERVAL = 0.25
_HTTP_TIMEOUT = 10.0


class PrometheusError(RuntimeError):
    """The Prometheus HTTP API answered with an error; the message carries Prometheus' own text."""


class PrometheusServer:
    """Prometheus scraping loopback targets, with exemplar storage on and a throw-away TSDB.

    ``with PrometheusServer([("svc", "127.0.0.1:8000", "/metrics")]) as prom:`` writes a config, starts
    Prometheus on a free port, waits for ``/-/ready`` and on exit stops it and deletes its temp dir.
    """

    def __init__(
        self,
        targets: Sequence[ScrapeTarget] = (),
        *,
        scrape_interval: str = "1s",
        evaluation_interval: str | None = None,
        rule_files: Sequence[str | os.PathLike[str]] = (),
        extra_flags: Sequence[str] = (),
        binary: str = PROMETHEUS_BINARY,
        ready_timeout: float = 60.0,
    ) -> None:
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval or scrape_interval
        self.rule_files = [str(Path(path).resolve()) for path in rule_files]
        self.extra_flags = list(extra_flags)
        self.binary = binary
        self.ready_timeout = ready_timeout
        self.port = 0
        self._targets = _checked(targets)
        self._dir: Path | None = None
        self._process: ServiceProcess | None = None
        self._session: requests.Session | None = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9090``."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> PrometheusServer:
        """Start Prometheus and wait until it is ready (retrying if the free port was taken meanwhile)."""
        if not Path(self.binary).is_file():
            raise FileNotFoundError(
                f"{self.binary} not found: `make test` installs Debian's prometheus package "
                "(apt-get install -y --no-install-recommends prometheus)"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="modellens-prometheus-"))
        try:
            self._write_config()
            for attempt in range(1, _START_ATTEMPTS + 1):
                self.port = free_port()
                process = ServiceProcess(
                    self._argv(), ready_url=f"{self.url}/-/ready", ready_timeout=self.ready_timeout
                )
                try:
                    self._process = process.start()
                    break
                except ServiceStartError as error:
                    if "address already in use" not in str(error) or attempt == _START_ATTEMPTS:
                        raise
            self._session = requests.Session()
            self._session.trust_env = False  # never send loopback queries through an HTTP proxy
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Prometheus and delete its config and TSDB (idempotent)."""
        if self._process is not None:
            self._process.stop()
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def output(self) -> str:
        """Prometheus' own log output so far."""
        return self._process.output() if self._process is not None else ""

    def query(self, expr: str, time: float | None = None) -> list[dict[str, Any]]:
        """Instant query; returns ``data.result``."""
        result: list[dict[str, Any]] = self._api("query", query=expr, time=time)["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float | str) -> list[dict[str, Any]]:
        """Range query; returns ``data.result`` (a matrix)."""
        result: list[dict[str, Any]] = self._api("query_range", query=expr, start=start, end=end, step=step)["result"]
        return result

    def query_exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """Exemplars of the series selected by ``expr``: ``[{"seriesLabels": ..., "exemplars": [...]}]``."""
        result: list[dict[str, Any]] = self._api("query_exemplars", query=expr, start=start, end=end)
        return result

    def targets(self) -> list[dict[str, Any]]:
        """Active targets as the targets API lists them (``labels``, ``health``, ``lastScrape``, ...)."""
        result: list[dict[str, Any]] = self._api("targets", state="active")["activeTargets"]
        return result

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll an instant query until ``predicate(result)`` holds and return that result.

        A query error is raised at once; on timeout ``TimeoutError`` shows the last result and target health.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{expr!r} did not satisfy the predicate within {timeout}s; last result: {result}"
                    f"\n{self._target_health()}"
                )
            time.sleep(_POLL_INTERVAL)

    def wait_for_scrapes(self, n: int = 2, timeout: float = 30.0) -> None:
        """Wait until every configured target has been scraped successfully ``n`` times after this call.

        Counts the ``up == 1`` samples whose timestamps (scrape start times) fall after the call.
        """
        since = time.time()
        deadline = time.monotonic() + timeout
        wanted = {(job, address) for job, address, _ in self._targets}
        counts: dict[tuple[str, str], float] = {}
        while True:
            now = time.time()
            window_ms = int((now - since) * 1000)
            if window_ms > 0:
                result = self.query(f"sum_over_time(up[{window_ms}ms])", time=now)
                counts = {(s["metric"]["job"], s["metric"]["instance"]): float(s["value"][1]) for s in result}
            if all(counts.get(target, 0) >= n for target in wanted):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"targets not scraped successfully {n} times within {timeout}s; successful scrapes "
                    f"since the call: {counts}\n{self._target_health()}"
                )
            time.sleep(_POLL_INTERVAL)

    def reload(self, targets: Sequence[ScrapeTarget] | None = None) -> None:
        """Rewrite the config (optionally with new targets) and reload it; rule files are re-read too."""
        if targets is not None:
            self._targets = _checked(targets)
        self._write_config()
        response = self._http.post(f"{self.url}/-/reload", timeout=_HTTP_TIMEOUT)
        with response:
            if response.status_code != 200:
                raise PrometheusError(f"reload failed ({response.status_code}): {response.text.strip()}")

    @property
    def _http(self) -> requests.Session:
        if self._session is None:
            raise RuntimeError("PrometheusServer is not running")
        return self._session

    def _api(self, endpoint: str, **params: Any) -> Any:
        params = {key: value for key, value in params.items() if value is not None}
        with self._http.get(f"{self.url}/api/v1/{endpoint}", params=params, timeout=_HTTP_TIMEOUT) as response:
            try:
                body = response.json()
            except ValueError:
                raise PrometheusError(
                    f"{endpoint} {params}: HTTP {response.status_code}: {response.text[:500]}"
                ) from None
        if body.get("status") != "success":
            raise PrometheusError(f"{endpoint} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def _target_health(self) -> str:
        try:
            targets = self.targets()
        except (PrometheusError, requests.RequestException) as error:
            return f"targets unavailable: {error}"
        lines = [
            f"  {t['labels'].get('job')} {t['scrapeUrl']}: health={t['health']} lastScrape={t['lastScrape']} "
            f"lastError={t['lastError']!r}"
            for t in targets
        ]
        return "target health:\n" + ("\n".join(lines) or "  (no active targets)")

    def _argv(self) -> list[str]:
        assert self._dir is not None
        return [
            self.binary,
            f"--config.file={self._dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self._dir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--web.enable-lifecycle",
            "--enable-feature=exemplar-storage",
            *self.extra_flags,
        ]

    def _write_config(self) -> None:
        assert self._dir is not None
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": self.rule_files,
            "scrape_configs": [
                {"job_name": job, "metrics_path": path, "static_configs": [{"targets": [address]}]}
                for job, address, path in self._targets
            ],
        }
        # JSON is valid YAML, so no YAML library is needed.
        (self._dir / "prometheus.yml").write_text(json.dumps(config, indent=2))


def _checked(targets: Sequence[ScrapeTarget]) -> list[ScrapeTarget]:
    for job, address, path in targets:
        if not address.startswith(f"{LOOPBACK}:") or not path.startswith("/"):
            raise ValueError(f"target {job!r} must be ('job', '{LOOPBACK}:port', '/path'), got {address!r} {path!r}")
    return list(targets)
