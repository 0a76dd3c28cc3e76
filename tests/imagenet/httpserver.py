"""A local HTTP server for download tests: 127.0.0.1 only, bounded in requests and lifetime."""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

# A route returns (status, headers, body) or None for 404; ``delay`` is applied by the route itself.
Route = Callable[["Handler"], tuple[int, dict[str, str], bytes]]


class Handler(BaseHTTPRequestHandler):
    server: "LocalServer"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid delayed-ACK stalls

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        with srv.lock:
            srv.hits[self.path] += 1
            srv.total += 1
            over = srv.total > srv.max_requests
        route = srv.routes.get(self.path)
        if over or route is None:
            self.send_response(503 if over else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, headers, body = route(self)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, routes: dict[str, Route], max_requests: int = 500, lifetime: float = 60.0) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes = routes
        self.max_requests = max_requests
        self.hits: Counter[str] = Counter()
        self.total = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._timer = threading.Timer(lifetime, self.stop)  # never outlives a hung test
        self._timer.daemon = True

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def sleep(self, seconds: float) -> None:
        """Sleep in a handler, but wake when the server stops."""
        self.stopping.wait(seconds)

    def __enter__(self) -> "LocalServer":
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
            self.shutdown()

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self.stop()
        self.server_close()
        self._thread.join(timeout=5)


def fixed(body: bytes, ctype: str = "image/jpeg", status: int = 200, delay: float = 0.0) -> Route:
    def route(h: Handler) -> tuple[int, dict[str, str], bytes]:
        if delay:
            h.server.sleep(delay)
        return status, {"Content-Type": ctype}, body

    return route


def redirect(location: str) -> Route:
    return lambda h: (302, {"Location": location}, b"")


def flaky(body: bytes, failures: int) -> Route:
    """503 for the first ``failures`` requests, then the body (exercises retry with backoff)."""
    count = [0]

    def route(h: Handler) -> tuple[int, dict[str, str], bytes]:
        count[0] += 1
        if count[0] <= failures:
            return 503, {}, b""
        return 200, {"Content-Type": "image/jpeg"}, body

    return route


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()
