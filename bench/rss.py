"""Memory under sustained load: the server's RSS from 5,000 to `--total` realistic requests.

Starts `cds-service serve` (1 worker, try-it mode, a fresh SQLite store) on loopback, sends the
realistic request (bench/bench.py) over keep-alive connections from a few threads, and reads the
server process's VmRSS every `--every` requests. The target: under 5% growth from 5,000 on.

    .venv/bin/python -m bench.rss [--total 50000] [--every 5000] [--threads 4]
"""

import argparse
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

from bench.bench import realistic_request
from tests.postgres import free_port

PORT = free_port()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def start(folder: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CDS_AUTH_DISABLED": "true",
        "CDS_TODAY": "2026-11-01",
        "CDS_LOG_LEVEL": "warning",
        "CDS_DATABASE_URL": f"sqlite:///{folder / 'rss.db'}",
    }
    command = [".venv/bin/cds-service", "serve", "--port", str(PORT), "--workers", "1"]
    server = subprocess.Popen(command, env=env, stderr=(folder / "server.log").open("wb"))
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{PORT}/ready").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError("the server did not become ready")


def send(count: int, body: bytes) -> int:
    """POST the body `count` times on one connection; how many answers were not 200."""
    failures = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=30) as client:
        for _ in range(count):
            answer = client.post(
                "/cds-services/patient-view",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            failures += answer.status_code != 200
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--total", type=int, default=50_000)
    parser.add_argument("--every", type=int, default=5_000)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    body = orjson.dumps(realistic_request())
    with tempfile.TemporaryDirectory() as folder:
        server = start(Path(folder))
        try:
            print(f"{'requests':>9} {'RSS MiB':>8} {'vs first':>9} {'non-200':>8} {'req/s':>6}")
            print(f"{0:>9} {rss_mib(server.pid):8.1f}")
            baseline, failures, sent = None, 0, 0
            while sent < args.total:
                started = time.perf_counter()
                share = args.every // args.threads
                with ThreadPoolExecutor(args.threads) as pool:
                    failures += sum(pool.map(send, [share] * args.threads, [body] * args.threads))
                sent += share * args.threads
                rate = share * args.threads / (time.perf_counter() - started)
                rss = rss_mib(server.pid)
                baseline = baseline or rss
                growth = (rss / baseline - 1) * 100
                print(f"{sent:>9} {rss:8.1f} {growth:+8.1f}% {failures:>8} {rate:6.0f}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
