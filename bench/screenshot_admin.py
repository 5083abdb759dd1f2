"""A PNG of the committee dashboard (/admin) of a running service, for the README.

Opens the page in headless Chromium, types the admin token, loads the report and writes a
full-page screenshot. The token is read from CDS_ADMIN_TOKEN unless given with --token.

    CDS_ADMIN_TOKEN=... .venv/bin/python -m bench.screenshot_admin http://127.0.0.1:8000 \\
        [--since 2026-10-01] [--until 2026-12-01] [--out build/screenshots/admin.png]
"""

import argparse
import os
import re
import sys
from pathlib import Path

from playwright.sync_api import ConsoleMessage, expect

from tests.chromium import chromium

ROOT = Path(__file__).resolve().parent.parent


def screenshot(
    base_url: str, token: str, out: Path, since: str = "", until: str = "", width: int = 1400
) -> list[str]:
    """Write the dashboard's screenshot to `out`; the page's console errors, if any."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    with chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": 1000})
        page.on("console", on_console)
        page.goto(f"{base_url.rstrip('/')}/admin")
        page.fill("#token", token)
        page.fill("#since", since)
        page.fill("#until", until)
        page.click("#load")
        expect(page.locator("#status")).to_have_text(
            re.compile("Report loaded|refused|No evaluations|could not", re.IGNORECASE),
            timeout=30_000,
        )
        status = page.locator("#status").inner_text()
        if "Report loaded" not in status:
            raise SystemExit(f"the dashboard did not load: {status}")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="the running service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--token", default=os.environ.get("CDS_ADMIN_TOKEN", ""))
    parser.add_argument("--since", default="", help="YYYY-MM-DD, inclusive")
    parser.add_argument("--until", default="", help="YYYY-MM-DD, exclusive")
    parser.add_argument("--width", type=int, default=1400, help="viewport width in pixels")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "build" / "screenshots" / "admin-dashboard.png"
    )
    args = parser.parse_args()
    if not args.token:
        parser.error("no admin token: set CDS_ADMIN_TOKEN or pass --token")
    problems = screenshot(args.base_url, args.token, args.out, args.since, args.until, args.width)
    print(args.out)
    for problem in problems:
        print(f"console error: {problem}", file=sys.stderr)


if __name__ == "__main__":
    main()
