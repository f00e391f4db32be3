"""An OTLP/HTTP trace collector on loopback, for tests of `--otel`: it keeps every export it
is sent, decoded with opentelemetry-proto's `ExportTraceServiceRequest`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["Received", "attributes", "otlp_receiver"]


@dataclass
class Received:
    url: str
    """The receiver's root (the exporter posts to `{url}/v1/traces`)."""
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def spans(self) -> list[Span]:
        return [
            span
            for request in self.requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def resource(self) -> dict[str, str]:
        (first, *_) = self.requests
        attributes = first.resource_spans[0].resource.attributes
        return {a.key: a.value.string_value for a in attributes}


@contextmanager
def otlp_receiver() -> Iterator[Received]:
    """An OTLP/HTTP collector on loopback keeping every trace export it is sent."""
    received = Received(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with lock:
                received.paths.append(self.path)
                received.requests.append(request)
            payload = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    received.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield received
    finally:
        httpd.shutdown()
        httpd.server_close()


def attributes(span: Span) -> dict[str, Any]:
    """A span's attributes as plain values (a list for an array)."""
    return {a.key: _value(a.value) for a in span.attributes}


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None
