"""Send an OTLP/JSON trace file (the demo's) to an OTLP/HTTP endpoint such as Phoenix.

Each line of the file is an ``ExportTraceServiceRequest`` in OTLP/JSON (hex ids). It is
parsed back into protobuf, the encoding every OTLP/HTTP receiver accepts, and posted as is,
so the spans keep their ids, times and parents.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

from confessional.errors import ConfessionalError, MissingExtraError

__all__ = ["ExportError", "send_trace_file"]

_ID_FIELDS: Final = frozenset({"traceId", "spanId", "parentSpanId"})


class ExportError(ConfessionalError):
    """The endpoint could not be reached in time or refused the spans."""


def _base64_ids(value: Any) -> Any:
    """The inverse of the file's hex ids: protobuf's JSON mapping wants bytes as base64."""
    if isinstance(value, dict):
        return {
            k: (
                base64.b64encode(bytes.fromhex(v)).decode()
                if k in _ID_FIELDS and isinstance(v, str)
                else _base64_ids(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_base64_ids(v) for v in value]
    return value


def send_trace_file(path: Path, endpoint: str, *, wait_s: float = 60.0) -> int:
    """Post every request in ``path`` to ``endpoint``; return the number of spans sent.

    ``endpoint`` is the receiver's base URL (``/v1/traces`` is appended when missing). A
    receiver that is still starting is retried for up to ``wait_s`` seconds, so
    ``phoenix serve & confessional report --send URL FILE`` works as one line.
    """
    try:
        from google.protobuf.json_format import ParseDict  # type: ignore[import-untyped]
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
    except ImportError as exc:
        raise MissingExtraError("otlp", "Sending a trace file", "opentelemetry-proto") from exc
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    sent = 0
    deadline = time.monotonic() + wait_s
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        message = ParseDict(_base64_ids(json.loads(line)), ExportTraceServiceRequest())
        _post(url, message.SerializeToString(), deadline)
        sent += sum(len(s.spans) for r in message.resource_spans for s in r.scope_spans)
    return sent


def _post(url: str, body: bytes, deadline: float) -> None:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/x-protobuf"}
    )
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10):
                return
        except urllib.error.HTTPError as exc:
            raise ExportError(f"{url} refused the spans: HTTP {exc.code} {exc.reason}") from exc
        except OSError as exc:  # not listening yet: the receiver may still be starting
            if time.monotonic() >= deadline:
                raise ExportError(f"could not reach {url}: {exc}") from exc
            time.sleep(0.5)
