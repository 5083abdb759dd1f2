"""Time budgets of the real service (`cds-service serve`, its protocol class and settings):
late headers close the connection, a late body gets 408, and a client that leaves cancels the
work it asked for (the fhirServer fetches stop)."""

import asyncio
import json
import select
import socket
import threading
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest

from cds_service.knowledge import load_knowledge
from cds_service.limits import RequestLimits
from cds_service.queries import queries
from tests.conftest import EXAMPLES
from tests.loopback import running_service

pytestmark = pytest.mark.slow  # the service runs as a uvicorn subprocess

TIMEOUT = 1.0
"""CDS_HEADER_TIMEOUT_SECONDS and CDS_BODY_TIMEOUT_SECONDS of the service under test."""
SLACK = 1.5
"""What the service may take past a timeout (loaded CI machines included)."""
FETCH_DEADLINE = 20.0
"""CDS_FHIR_DEADLINE_SECONDS and CDS_FHIR_TIMEOUT_SECONDS: fetches end early only if cancelled."""
EXAMPLE = "red-flag-spinal-infection--fever-ivdu-markers"
CALL = "/cds-services/patient-view"


@dataclass
class Upstream:
    """One connection the service opened to the slow FHIR server."""

    path: str
    opened: float
    closed: float | None = None


@dataclass
class SlowFhir:
    """A FHIR server on loopback that holds every request: it never answers, and notes when the
    service closes the connection (`answer_after` None), or answers after that many seconds."""

    base: str = ""
    answer_after: float | None = None
    answers: dict[str, Any] = field(default_factory=dict)
    """Answers by resource type (the path's first segment); an empty searchset otherwise."""
    upstreams: list[Upstream] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def serve(self, listener: socket.socket) -> None:
        listener.settimeout(0.05)
        while not self.stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.05)
            head = b""
            while b"\r\n\r\n" not in head and not self.stopping.is_set():
                with suppress(TimeoutError):
                    head += conn.recv(4096)
            path = head.split(b" ", 2)[1].decode() if head.count(b" ") >= 2 else ""
            upstream = Upstream(path, time.monotonic())
            self.upstreams.append(upstream)
            if self.answer_after is not None:
                time.sleep(self.answer_after)
                self._answer(conn, path)
                return
            while not self.stopping.is_set():  # hold until the service gives up
                try:
                    if conn.recv(4096) == b"":
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
            upstream.closed = time.monotonic()

    def _answer(self, conn: socket.socket, path: str) -> None:
        kind = path.removeprefix("/fhir/").split("?")[0]
        empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
        payload = json.dumps(self.answers.get(kind, empty)).encode()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        with suppress(OSError):
            conn.sendall(head.encode() + payload)


@contextmanager
def slow_fhir() -> Iterator[SlowFhir]:
    state = SlowFhir()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        state.base = f"http://127.0.0.1:{listener.getsockname()[1]}/fhir"
        thread = threading.Thread(target=state.serve, args=(listener,), daemon=True)
        thread.start()
        try:
            yield state
        finally:
            state.stopping.set()
            thread.join()


@dataclass
class Service:
    host: str
    port: int
    log: Path
    fhir: SlowFhir

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=10)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`cds-service serve` with 1 s header and body timeouts, allowed to fetch from SlowFhir."""
    folder = tmp_path_factory.mktemp("timeouts")
    with slow_fhir() as fhir:
        settings = {
            "CDS_FHIR_SERVERS": json.dumps([fhir.base.removesuffix("fhir")]),
            "CDS_FHIR_ALLOW_PRIVATE": "true",
            "CDS_FHIR_DEADLINE_SECONDS": str(FETCH_DEADLINE),
            "CDS_FHIR_TIMEOUT_SECONDS": str(FETCH_DEADLINE),
            "CDS_HEADER_TIMEOUT_SECONDS": str(TIMEOUT),
            "CDS_BODY_TIMEOUT_SECONDS": str(TIMEOUT),
        }
        database = f"sqlite:///{folder / 'spine-cds.db'}"
        with running_service(folder, database, settings) as (url, _):
            port = urlsplit(url).port
            assert port is not None
            yield Service("127.0.0.1", port, folder / f"server-{port}.log", fhir)


def _example(**prefetch: Any) -> dict[str, Any]:
    """The example request, its prefetch keys replaced (a None value drops the key)."""
    request: dict[str, Any] = json.loads((EXAMPLES / f"{EXAMPLE}.json").read_text())
    for key, value in prefetch.items():
        if value is None:
            del request["prefetch"][key]
        else:
            request["prefetch"][key] = value
    return request


def _post(path: str, body: bytes, length: int | None = None) -> bytes:
    """The bytes of a POST of `body` (declaring `length` bytes if given)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response (with Content-Length) from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def _closed_after(sock: socket.socket, started: float) -> float:
    """Seconds from `started` until the server closes `sock` (read returns b"")."""
    sock.settimeout(TIMEOUT + SLACK + 5)
    assert sock.recv(65536) == b""
    return time.monotonic() - started


def _get_ready() -> bytes:
    return b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_half_sent_headers_are_closed_at_the_header_timeout(service: Service) -> None:
    with service.connect() as sock:
        started = time.monotonic()
        sock.sendall(b"POST /cds-services/patient-view HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
        elapsed = _closed_after(sock, started)
    print(f"half-sent headers: closed after {elapsed:.2f} s")
    assert TIMEOUT - 0.1 < elapsed < TIMEOUT + SLACK


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(
    service: Service,
) -> None:
    with service.connect() as sock:
        elapsed = _closed_after(sock, time.monotonic())
    print(f"silent connection: closed after {elapsed:.2f} s")
    assert TIMEOUT - 0.1 < elapsed < TIMEOUT + SLACK


def test_keep_alive_idles_freely_but_its_next_headers_are_timed(service: Service) -> None:
    with service.connect() as sock:
        sock.sendall(_get_ready())
        assert _read_response(sock)[0] == 200
        time.sleep(TIMEOUT + 0.5)  # idle past the header timeout, within uvicorn's keep-alive
        sock.sendall(_get_ready())
        assert _read_response(sock)[0] == 200  # same connection: the idle time did not count
        sock.sendall(b"GET /ready HTTP/1.1\r\nHo")
        elapsed = _closed_after(sock, time.monotonic())
    print(f"kept-alive connection, half-sent next headers: closed after {elapsed:.2f} s")
    assert TIMEOUT - 0.1 < elapsed < TIMEOUT + SLACK


def test_a_half_sent_body_gets_408_at_the_body_timeout(service: Service) -> None:
    with service.connect() as sock:
        started = time.monotonic()
        sock.sendall(_post(CALL, b'{"hook": "p', length=1000))
        status, headers, body = _read_response(sock)
        elapsed = time.monotonic() - started
        assert sock.recv(1) == b""  # and the connection is closed
    print(f"half-sent body: {status} after {elapsed:.2f} s")
    assert status == 408
    assert headers["connection"] == "close"
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert "did not arrive within 1 s" in outcome["issue"][0]["diagnostics"]
    assert TIMEOUT - 0.1 < elapsed < TIMEOUT + SLACK


def test_the_body_timeout_is_for_the_whole_body_not_each_chunk(service: Service) -> None:
    with service.connect() as sock:
        started = time.monotonic()
        sock.sendall(_post(CALL, b"", length=1000))
        sent = 0
        while not select.select([sock], [], [], 0.2)[0]:  # a byte every 0.2 s until answered
            sock.sendall(b" ")
            sent += 1
            assert time.monotonic() - started < TIMEOUT + SLACK + 5
        status, _, _ = _read_response(sock)
        elapsed = time.monotonic() - started
    print(f"trickled body ({sent} bytes, one per 0.2 s): {status} after {elapsed:.2f} s")
    assert status == 408
    assert TIMEOUT - 0.1 < elapsed < TIMEOUT + SLACK


def test_a_client_that_leaves_cancels_its_fhir_server_fetches(service: Service) -> None:
    fhir = service.fhir
    fhir.answer_after, fhir.upstreams = None, []  # the FHIR server holds every request
    request = _example(observations=None)  # to be fetched, with the optional keys
    request["fhirServer"] = fhir.base
    with service.connect() as sock:
        sock.sendall(_post(CALL, json.dumps(request).encode()))
        deadline = time.monotonic() + 10
        while not any(u.path.startswith("/fhir/Observation?") for u in fhir.upstreams):
            assert time.monotonic() < deadline, "the service did not fetch the observations"
            time.sleep(0.02)
        time.sleep(0.3)  # every fetch under way
    left = time.monotonic()  # the client closed its connection, its call unanswered
    deadline = left + 10
    while any(u.closed is None for u in fhir.upstreams):
        assert time.monotonic() < deadline, "fetches went on after the client left"
        time.sleep(0.02)
    waited = [upstream.closed - left for upstream in fhir.upstreams if upstream.closed]
    print(f"client left: {len(waited)} fetches abandoned after {max(waited):.2f} s at most")
    # every Observation category key and the three other optional keys (procedures, referrals,
    # medications)
    categories = [k for k in queries(load_knowledge()).templates if k.startswith("observations-")]
    assert len(waited) == len(categories) + 3
    assert max(waited) < SLACK  # the deadline (20 s) would have ended them much later
    assert "the call is cancelled" in service.log.read_text()
    assert httpx.get(f"{service.url}/ready", timeout=5).status_code == 200


def test_a_normal_call_answers_with_cards(service: Service) -> None:
    response = httpx.post(
        f"{service.url}{CALL}",
        content=json.dumps(_example()),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert card["indicator"] == "critical"


def test_a_call_slower_than_both_timeouts_still_answers(service: Service) -> None:
    fhir = service.fhir
    observations = _example()["prefetch"]["observations"]
    fhir.answer_after, fhir.answers, fhir.upstreams = (
        TIMEOUT + 0.5,
        {"Observation": observations},
        [],
    )
    request = _example(observations=None)
    request["fhirServer"] = fhir.base
    started = time.monotonic()
    response = httpx.post(
        f"{service.url}{CALL}",
        content=json.dumps(request),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    elapsed = time.monotonic() - started
    print(
        f"call whose fetches take {fhir.answer_after} s: {response.status_code} after "
        f"{elapsed:.2f} s"
    )
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert card["indicator"] == "critical"
    assert elapsed > TIMEOUT + 0.5


# In process: what the watcher does around the app, with a server modelled on uvicorn's receive
# (the body, then `http.disconnect` once the response is complete or the client has left).


def _limits_call(app: Any, leave_after: float | None = None) -> list[str]:
    """Run RequestLimits(app) on one call; the client leaves after `leave_after` s (if given).
    What the server was sent, then whether tasks were left behind."""
    sent: list[str] = []

    async def main() -> None:
        done = anyio.Event()

        async def receive() -> dict[str, Any]:
            if not sent:
                sent.append("body")
                return {"type": "http.request", "body": b"{}", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(str(message.get("status", "body")))
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        async def leave() -> None:
            if leave_after is not None:
                await anyio.sleep(leave_after)
                done.set()

        headers = [(b"content-type", b"application/json")]
        scope: dict[str, Any] = {"type": "http", "method": "POST", "path": CALL, "headers": headers}
        before = len(asyncio.all_tasks())
        async with anyio.create_task_group() as group:
            group.start_soon(leave)
            try:
                await RequestLimits(app, 1000, "/cds-services/")(scope, receive, send)
            except Exception as exc:  # handed to the test as raised
                raised.append(exc)
            group.cancel_scope.cancel()
        await anyio.sleep(0)
        sent.append(f"tasks left: {len(asyncio.all_tasks()) - before}")

    raised: list[Exception] = []
    anyio.run(main)
    if raised:
        raise raised[0]
    return sent


async def _respond(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_work_after_the_response_is_not_cancelled_and_no_task_is_left() -> None:
    after: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["body"] == b"{}"
        await _respond(send)
        await anyio.sleep(0.05)  # the server says `http.disconnect` now: a normal end
        after.append("done")

    assert _limits_call(app) == ["body", "200", "body", "tasks left: 0"]
    assert after == ["done"]


def test_a_client_that_leaves_cancels_the_app_and_its_receive_sees_it() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        async with anyio.create_task_group() as group:

            async def listen() -> None:
                seen.append((await receive())["type"])  # waits for the disconnect

            group.start_soon(listen)
            await anyio.sleep(5)  # a slow fetch, cut short
            seen.append("finished")

    started = time.monotonic()
    assert _limits_call(app, leave_after=0.1) == ["body", "tasks left: 0"]
    assert time.monotonic() - started < 1
    assert "finished" not in seen


def test_an_error_in_the_app_comes_out_as_itself() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        _limits_call(app)
