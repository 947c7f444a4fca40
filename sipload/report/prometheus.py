"""Live metrics in the Prometheus text exposition format (version 0.0.4), served on GET /metrics.

`exposition(agg)` renders the run as of its last flushed interval; `MetricsExporter.update(agg)` is
called once per interval (percentiles are computed there, never per scrape or per request) and
`MetricsExporter.serve` is a tiny trio HTTP/1.1 server: GET or HEAD /metrics answers the latest text,
any other path 404, any other method 405; one request per connection.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import trio

from sipload.metrics.aggregate import Aggregate
from sipload.metrics.phases import Kind, Phase

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_QUANTILES = (("p50", "0.5"), ("p90", "0.9"), ("p95", "0.95"), ("p99", "0.99"), ("p99.9", "0.999"))
_MAX_REQUEST = 8192
_REQUEST_TIMEOUT = 5.0


def parse_listen(text: str) -> tuple[str, int]:
    """ "127.0.0.1:9464", "[::1]:9464", "localhost:0" -> (host, port); raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT such as 127.0.0.1:9464, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, e.g. [::1]:9464, got {text!r}")
    return host, int(port)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if x != int(x) or abs(x) >= 1e15 else str(int(x))


class _Text:
    def __init__(self, base: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.base = base

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[str, dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            all_labels = {**self.base, **labels}
            text = ",".join(f'{k}="{_label(v)}"' for k, v in all_labels.items())
            self.lines.append(f"{name}{suffix}{{{text}}} {_num(value)}" if text else f"{name}{suffix} {_num(value)}")

    def render(self) -> str:
        return "\n".join(self.lines) + "\n"


def exposition(agg: Aggregate | None, *, scenario: str = "", now_unix: float | None = None) -> str:
    """The run as Prometheus metrics (counters are totals since the start; latency in seconds)."""
    t = _Text({"scenario": scenario} if scenario else {})
    t.family("sipload_up", "gauge", "1 while the sipload run is going.", [("", {}, 1.0)])
    if agg is None:
        return t.render()
    if now_unix is not None:
        t.family("sipload_elapsed_seconds", "gauge", "Seconds since the run started.",
                 [("", {}, max(0.0, now_unix - agg.started_at_unix))])
    ops: list[tuple[str, dict[str, str], float]] = []
    for p in Phase:
        c = agg.counts(p)
        for outcome, n in (("attempted", c.attempted), ("succeeded", c.succeeded), ("failed", c.failed)):
            ops.append(("", {"phase": str(p), "outcome": outcome}, float(n)))
    t.family("sipload_operations_total", "counter", "Operations per phase and outcome.", ops)
    t.family("sipload_failures_total", "counter", "Failures by phase and reason.",
             [("", {"phase": phase, "reason": reason}, float(n))
              for phase, by in agg.failures_by_phase().items() for reason, n in by.items()])
    t.family("sipload_responses_total", "counter", "SIP responses received, by status code.",
             [("", {"code": str(code)}, float(n)) for code, n in agg.responses().items()])
    t.family("sipload_retransmissions_total", "counter", "Requests retransmitted.",
             [("", {}, float(agg.retransmissions))])
    t.family("sipload_kernel_drops", "gauge", "Datagrams the kernel dropped on the generator's sockets.",
             [("", {}, float(agg.gauge_total("kernel_drops")))])
    t.family("sipload_registered", "gauge", "Bindings held now.", [("", {}, float(agg.gauge_total("registered")))])
    t.family("sipload_in_flight", "gauge", "Operations in flight now.",
             [("", {}, float(agg.gauge_total("in_flight")))])
    samples: list[tuple[str, dict[str, str], float]] = []
    for kind in Kind:
        for phase, s in agg.latency_summary(kind).items():
            labels = {"phase": phase, "kind": str(kind)}
            for stat, q in _QUANTILES:
                if stat in s:
                    samples.append(("", {**labels, "quantile": q}, s[stat] / 1000.0))
            samples.append(("_sum", labels, s["mean"] * s["count"] / 1000.0))
            samples.append(("_count", labels, s["count"]))
    t.family("sipload_latency_seconds", "summary",
             "Latency per phase, from the intended start (kind=intended) or the actual send (kind=service).",
             samples)
    lag = agg.schedule_lag_summary()
    if lag:
        lag_samples = [("", {"quantile": q}, lag[stat] / 1000.0) for stat, q in _QUANTILES if stat in lag]
        lag_samples.append(("_sum", {}, lag["mean"] * lag["count"] / 1000.0))
        lag_samples.append(("_count", {}, lag["count"]))
        t.family("sipload_schedule_lag_seconds", "summary", "How late arrivals were sent against the schedule.",
                 lag_samples)
    return t.render()


class MetricsExporter:
    """Holds the latest exposition text and serves it over HTTP."""

    def __init__(self, scenario: str = "") -> None:
        self.scenario = scenario
        self.text = exposition(None, scenario=scenario)
        self.scrapes = 0

    def update(self, agg: Aggregate, now_unix: float | None = None) -> None:
        """Once per interval, after `agg.flush_interval`."""
        self.text = exposition(agg, scenario=self.scenario, now_unix=now_unix)

    async def serve(self, host: str, port: int,
                    *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on host:port (0 = any free port); `nursery.start` returns the bound port."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = int(listeners[0].socket.getsockname()[1])
        task_status.started(bound)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(_REQUEST_TIMEOUT):
                head = await _read_head(stream)
                if head is None:
                    return
                method, _, rest = head.partition(" ")
                path = rest.partition(" ")[0].partition("?")[0]
                if method not in ("GET", "HEAD"):
                    await _respond(stream, "405 Method Not Allowed", "text/plain", b"use GET\n",
                                   head_only=False, extra="Allow: GET, HEAD\r\n")
                elif path != "/metrics":
                    await _respond(stream, "404 Not Found", "text/plain", b"try /metrics\n", head_only=method == "HEAD")
                else:
                    self.scrapes += 1
                    await _respond(stream, "200 OK", CONTENT_TYPE, self.text.encode("utf-8"),
                                   head_only=method == "HEAD")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await stream.aclose()


async def _read_head(stream: trio.SocketStream) -> str | None:
    """The request line, once the whole head arrived; None for a closed or oversized request."""
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > _MAX_REQUEST:
            return None
    return data.split(b"\n", 1)[0].decode("latin-1").strip()


async def _respond(stream: trio.SocketStream, status: str, content_type: str, body: bytes, *,
                   head_only: bool, extra: str = "") -> None:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n").encode("ascii")
    await stream.send_all(head if head_only else head + body)
