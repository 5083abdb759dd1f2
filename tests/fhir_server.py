"""A small FHIR server on loopback for prefetch tests: canned answers, paging, failures; searches
by GET or by POST `_search`."""

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_POLL_SECONDS = 0.02
"""How often the serving loop checks for shutdown."""


@dataclass
class FhirServer:
    """Answers GETs from `routes` (path with query -> (status, JSON body or raw bytes)); records
    every request."""

    routes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    base: str = ""
    trickle: dict[str, float] = field(default_factory=dict)
    """Paths answered one byte at a time, this many seconds apart (a server that stalls)."""
    answer: Callable[[str], tuple[int, Any]] | None = None
    """Answers every GET instead of `routes` when set (e.g. a search implementation)."""
    posted: list[tuple[str, str]] = field(default_factory=list)
    """(path, body) of every POST that is not a search (answered 404)."""


@contextmanager
def fhir_server() -> Iterator[FhirServer]:
    state = FhirServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.removeprefix("/fhir/")
            state.requests.append((path, self.headers.get("Authorization")))
            if state.answer is not None:
                status, body = state.answer(path)
            else:
                status, body = state.routes.get(path, (404, {"resourceType": "OperationOutcome"}))
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Access-Control-Allow-Origin", "*")  # pages may read it too
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            delay = state.trickle.get(path)
            if delay is None:
                self.wfile.write(payload)
                return
            for byte in payload:
                time.sleep(delay)
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:  # the client gave up
                    return

        def do_POST(self) -> None:
            """A search by POST (`Type/_search`, form-encoded parameters), answered as the GET
            `Type?parameters` (FHIR R4 §3.1.0.8.1); any other POST is recorded and gets 404."""
            path = self.path.removeprefix("/fhir/")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            form = self.headers.get("Content-Type", "").startswith(
                "application/x-www-form-urlencoded"
            )
            if not (path.endswith("/_search") and form):
                state.posted.append((path, body))
                payload = json.dumps({"resourceType": "OperationOutcome"}).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            self.path = f"/fhir/{path.removesuffix('/_search')}?{body}"
            self.do_GET()

        def do_OPTIONS(self) -> None:  # a browser's CORS preflight (an Authorization header)
            self.send_response(204)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Headers", "Authorization, Accept, Content-Type")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # daemon handler threads
    state.base = f"http://127.0.0.1:{server.server_address[1]}/fhir"
    # shutdown() waits for the serving loop to look at its flag: every 0.5 s by default, which
    # cost half a second per test; polled every 20 ms it costs about 10 ms.
    thread = threading.Thread(target=server.serve_forever, args=(_POLL_SECONDS,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()  # does not wait for handlers (still trickling, say): daemons
        thread.join()
