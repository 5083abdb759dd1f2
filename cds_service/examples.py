"""The example requests (fhir_examples/), rebased to the evaluation date so they never age.

The files are written relative to one anchor date, the first line of the folder's
`anchor-date.txt`: "new" means a few days before it, "chronic" months before it. Loaded for a
given day, every full date and dateTime in a request moves by (day - anchor) days, so the
intervals the rules read (weeks since onset, days in a lookback, ages give or take a day) are
the same on any date. A folder without an anchor file is served as it is.
"""

import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ANCHOR_FILE = "anchor-date.txt"

_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?")
"""A FHIR date (year, month and day) or dateTime/instant; partial dates ("2014") are left
alone, as codes look the same (RxNorm "5640")."""


def anchor(folder: Path) -> date | None:
    """The date the folder's examples are written relative to, or None."""
    path = folder / ANCHOR_FILE
    if not path.is_file():
        return None
    return date.fromisoformat(path.read_text(encoding="utf-8").split()[0])


def names(folder: Path) -> dict[str, Path]:
    """The example requests of a folder, by name (file stem), in name order."""
    return {path.stem: path for path in sorted(folder.glob("*.json"))}


def shift(value: Any, days: int) -> Any:
    """`value` (parsed JSON) with every full date and dateTime moved by `days` days."""
    if isinstance(value, dict):
        return {key: shift(item, days) for key, item in value.items()}
    if isinstance(value, list):
        return [shift(item, days) for item in value]
    if isinstance(value, str) and days:
        match = _DATE.fullmatch(value)
        if match:
            try:
                moved = date.fromisoformat(match[1]) + timedelta(days=days)
            except (ValueError, OverflowError):  # not a real date, or past year 9999
                return value
            return moved.isoformat() + (match[2] or "")
    return value


def load(path: Path, today: date) -> Any:
    """One example request (parsed JSON), rebased from its folder's anchor to `today`."""
    request = json.loads(path.read_text(encoding="utf-8"))
    start = anchor(path.parent)
    return request if start is None else shift(request, (today - start).days)
