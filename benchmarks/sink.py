"""A stand-in OTLP/HTTP endpoint for benchmarks, run as its own process so it never shares the server's CPU time.

    python -m benchmarks.sink [--port 0] [--mode ok|503|hang] [--count]

It prints `listening on <port>` once it accepts connections. `ok` answers 200 to `POST /v1/{traces,metrics,logs}`
without decoding (unless `--count`: then it counts spans, metric points and log records, to check what the
service exported); `503` answers 503 (retryable: the exporter backs off and retries); `hang` reads the request and
never answers, holding the connection until the client gives up (a black hole). `GET /stats` returns the counters
as JSON in every mode. Keep-alive HTTP/1.1, as a Collector would speak.
"""

from __future__ import annotations

import argparse
import gzip
import json
import select
import socketserver
import sys
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["MODES", "main"]

MODES = ("ok", "503", "hang")
_SIGNALS = ("traces", "metrics", "logs")


class _Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, **amounts: int) -> None:
        with self._lock:
            self._counts.update(amounts)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def _item_counter() -> Callable[[str, bytes], int]:
    """Spans, metric data points or log records in an export request (imports protobuf only when asked)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    def points(metric: Any) -> int:
        kind = metric.WhichOneof("data")
        return len(getattr(metric, kind).data_points) if kind else 0

    def count(signal: str, body: bytes) -> int:
        if signal == "traces":
            traces = ExportTraceServiceRequest.FromString(body)
            return sum(len(scope.spans) for resource in traces.resource_spans for scope in resource.scope_spans)
        if signal == "logs":
            logs = ExportLogsServiceRequest.FromString(body)
            return sum(len(scope.log_records) for resource in logs.resource_logs for scope in resource.scope_logs)
        metrics = ExportMetricsServiceRequest.FromString(body)
        return sum(
            points(metric) for resource in metrics.resource_metrics for scope in resource.scope_metrics
            for metric in scope.metrics
        )  # fmt: skip

    return count


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Sink

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        signal = self.path.partition("?")[0].removeprefix("/v1/")
        if signal not in _SIGNALS:
            self._reply(404, b"unknown path", "text/plain")
            return
        self.server.stats.add(**{f"{signal}_requests": 1, f"{signal}_bytes": len(body)})
        mode = self.server.mode
        if mode == "hang":
            self._hold()
            return
        if mode == "503":
            self._reply(503, b"unavailable (benchmark sink)", "text/plain")
            return
        if self.server.count is not None:
            self.server.stats.add(**{f"{signal}_items": self.server.count(signal, self._decoded(body))})
        self._reply(200, b"", "application/x-protobuf")

    def _decoded(self, body: bytes) -> bytes:
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding == "gzip":
            return gzip.decompress(body)
        return zlib.decompress(body) if encoding == "deflate" else body

    def do_GET(self) -> None:
        if self.path != "/stats":
            self._reply(404, b"unknown path", "text/plain")
            return
        stats = {"mode": self.server.mode, **self.server.stats.snapshot()}
        self._reply(200, json.dumps(stats).encode(), "application/json")

    def _hold(self) -> None:
        """Never answer: wait until the client closes the connection (its export timeout), then drop it."""
        self.close_connection = True
        while True:
            readable, _, _ = select.select([self.connection], [], [], 60.0)
            if readable and not self.connection.recv(65536):
                return

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the exporter gave up first
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Sink(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, port: int, mode: str, count: Callable[[str, bytes], int] | None) -> None:
        self.mode = mode
        self.count = count
        self.stats = _Stats()
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's reverse DNS lookup of the address
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sink", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--count", action="store_true", help="decode exports and count spans, points and records")
    args = parser.parse_args(argv)
    sink = _Sink(args.port, args.mode, _item_counter() if args.count else None)
    print(f"listening on {sink.server_address[1]}", flush=True)
    try:
        sink.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        sink.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
