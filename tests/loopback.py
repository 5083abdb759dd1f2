"""The service on loopback for tests that need real HTTP: in this process (`serving`) or as
`cds-service serve` in its own (`running_service`)."""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from cds_service.app import create_app
from cds_service.settings import Settings
from tests.conftest import EXAMPLE_TODAY
from tests.postgres import free_port


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread, until the block ends."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def running_service(
    folder: Path, database_url: str, settings: Mapping[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`cds-service serve` as a process on a free loopback port (try-it mode, the examples'
    date, `settings` as CDS_* variables besides), until the block ends; its output goes to
    `folder / "server-<port>.log"`."""
    port = free_port()
    env = {
        **os.environ,
        "CDS_TODAY": EXAMPLE_TODAY.isoformat(),
        "CDS_DATABASE_URL": database_url,
        "CDS_AUTH_DISABLED": "true",
        **(settings or {}),
    }
    with (folder / f"server-{port}.log").open("w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cds_service",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{url}/ready", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise
                    time.sleep(0.1)
            yield url, server
        finally:
            if server.poll() is None:
                server.terminate()
            server.wait(timeout=10)
