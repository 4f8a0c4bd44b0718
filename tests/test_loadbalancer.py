"""The compose stack's load balancer (nginx/nginx.conf) run by Debian's nginx in front of a real `modellens serve`.

Debian 12 ships nginx 1.22, older than the pinned image (1.28): its upstreams cannot `resolve` names again at run
time (open-source nginx can since 1.27.3), and there is no Docker DNS here. The test config is the committed file
with exactly those lines swapped for a fixed loopback replica, and its paths moved into a temp dir; every other
directive (buffering, timeouts, limits, the problem documents) is the one the stack runs.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from service.artifact.card import ModelCard
from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ServiceProcess
from tests.test_serving import instance, serve

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NGINX = "/usr/sbin/nginx"
SLOW_CLIENTS = 50


def local_config(directory: Path, listen: int, replica: int) -> Path:
    """nginx/nginx.conf for this machine: a fixed replica instead of Docker DNS, files under `directory`."""
    text = (ROOT / "nginx/nginx.conf").read_text()
    swaps = [
        (r"\n\s*resolver 127\.0\.0\.11[^;]*;", ""),
        (r"server model:8000 resolve", f"server {LOOPBACK}:{replica}"),
        (r"listen 8080;", f"listen {LOOPBACK}:{listen};"),
        (r"/tmp/", f"{directory}/"),
        (r"access_log /dev/stdout json;", f"access_log {directory}/access.log json;"),
    ]
    for pattern, replacement in swaps:
        text, count = re.subn(pattern, replacement, text)
        assert count == 1 or pattern == "/tmp/", f"nginx/nginx.conf no longer has {pattern!r}"
    path = directory / "nginx.conf"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def model_dir(regression_model_dir: Path) -> Path:
    return regression_model_dir


@pytest.fixture
def balancer(tmp_path: Path, model_dir: Path) -> Iterator[tuple[str, str]]:
    """(the load balancer's URL, the replica's URL): nginx with the stack's config, in front of one service."""
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed: `make test` installs Debian's nginx package")
    replica, listen = free_port(), free_port()
    config = local_config(tmp_path, listen, replica)
    argv = [NGINX, "-c", str(config), "-p", str(tmp_path), "-g", "daemon off;"]
    with (
        serve(model_dir, replica, None, MODELLENS_THREADS="4"),
        ServiceProcess(argv, ready_url=f"http://{LOOPBACK}:{listen}/readyz"),
    ):
        yield f"http://{LOOPBACK}:{listen}", f"http://{LOOPBACK}:{replica}"


def test_the_committed_config_passes_nginx_t(tmp_path: Path) -> None:
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed: `make test` installs Debian's nginx package")
    config = local_config(tmp_path, free_port(), free_port())
    result = subprocess.run(
        [NGINX, "-t", "-c", str(config), "-p", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def _dribble(port: int, stop: threading.Event, opened: list[socket.socket]) -> None:
    """A client that sends a request's headers a few bytes at a time and never finishes them."""
    try:
        sock = socket.create_connection((LOOPBACK, port), timeout=5)
    except OSError:
        return
    opened.append(sock)
    try:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        while not stop.wait(0.5):
            sock.sendall(b"X-Slow: 1\r\n")
    except OSError:
        pass  # nginx cut it off (client_header_timeout): what it should do


class TestSlowClients:
    """Slow clients hold nginx connections, not gunicorn's threads (issue 16: 4 such clients stopped the service)."""

    def test_fifty_slow_header_clients_do_not_stop_predictions(
        self, balancer: tuple[str, str], model_dir: Path
    ) -> None:
        url, _ = balancer
        port = int(url.rsplit(":", 1)[1])
        row = instance(ModelCard.load(model_dir))
        stop = threading.Event()
        opened: list[socket.socket] = []
        threads = [threading.Thread(target=_dribble, args=(port, stop, opened)) for _ in range(SLOW_CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)  # every slow client is connected and dribbling
            assert len(opened) == SLOW_CLIENTS
            with requests.Session() as http:
                answers = [http.post(f"{url}/predict", json={"instances": [row]}, timeout=5) for _ in range(10)]
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
            for sock in opened:
                sock.close()
        assert [answer.status_code for answer in answers] == [200] * 10
        assert all(answer.json()["predictions"] for answer in answers)


class TestProblems:
    """What nginx itself refuses is a problem document too, never an HTML page."""

    def test_a_body_over_the_balancers_limit(self, balancer: tuple[str, str]) -> None:
        url, _ = balancer
        response = requests.post(f"{url}/predict", data=b" " * (4 * 1024 * 1024), timeout=10,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
        assert response.status_code == 413
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.json()["status"] == 413

    def test_an_oversized_header_is_a_problem_document_not_an_html_page(self, balancer: tuple[str, str]) -> None:
        url, _ = balancer
        response = requests.get(f"{url}/readyz", headers={"X-Big": "x" * 40_000}, timeout=10)
        assert response.status_code == 400
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.json()["title"] == "Bad Request"

    def test_the_services_own_problems_pass_through(self, balancer: tuple[str, str]) -> None:
        url, _ = balancer
        response = requests.post(f"{url}/predict", json={"instances": [{"no_such_feature": 1}]}, timeout=10)
        assert response.status_code == 422
        assert response.json()["errors"], response.text

    def test_no_replica_is_a_503_with_retry_after(self, tmp_path: Path) -> None:
        listen = free_port()
        config = local_config(tmp_path, listen, free_port())  # nothing listens on the replica's port
        argv = [NGINX, "-c", str(config), "-p", str(tmp_path), "-g", "daemon off;"]
        with ServiceProcess(argv, ready_url=None) as process:
            response = _retrying(lambda: requests.get(f"http://{LOOPBACK}:{listen}/readyz", timeout=5))
            assert process.pid
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.json() == {
            "type": "about:blank",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "No model replica is reachable; retry shortly.",
        }


def _retrying(call: object, seconds: float = 10.0) -> requests.Response:
    """`call()` once nginx listens (it has no ready URL of its own that answers 200 without a replica)."""
    assert callable(call)
    deadline = time.monotonic() + seconds
    while True:
        try:
            response: requests.Response = call()
            return response
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
