"""sipload's own view for a cross-check: a run's endpoints.csv, or a username template.

endpoints.csv (written by `sipload run`) has `username` and `state` columns; an optional
`last_ok_at` column (Unix seconds of the last REGISTER 200 OK) enables propagation delays.
"""

from __future__ import annotations

import csv
from pathlib import Path

from sipload.providers.crosscheck import OurEndpoint

ENDPOINTS_CSV = "endpoints.csv"


class EndpointsError(ValueError):
    """The endpoints could not be read; the message names the file and line."""


def load_endpoints(results: Path) -> list[OurEndpoint]:
    """The endpoints of a run: `results` is its results directory (or the endpoints.csv itself)."""
    path = results / ENDPOINTS_CSV if results.is_dir() else results
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"username", "state"} - set(reader.fieldnames or ())
            if missing:
                raise EndpointsError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            out: list[OurEndpoint] = []
            for row in reader:
                user, state = (row.get("username") or "").strip(), (row.get("state") or "").strip()
                if not user or not state:
                    raise EndpointsError(f"{path}:{reader.line_num}: empty username or state")
                out.append(OurEndpoint(user, state, _unix(row.get("last_ok_at"), path, reader.line_num)))
    except OSError as exc:
        raise EndpointsError(f"{path}: cannot read: {exc.strerror}") from None
    if not out:
        raise EndpointsError(f"{path}: no endpoints")
    return out


def _unix(text: str | None, path: Path, line: int) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise EndpointsError(f"{path}:{line}: last_ok_at {text!r} is not a number of seconds") from None


def template_endpoints(template: str, count: int, first: int = 1, state: str = "registered") -> list[OurEndpoint]:
    """`user{n}` x count -> endpoints all assumed in `state` (no 200 OK time known)."""
    if "{n}" not in template:
        raise EndpointsError(f"--users: the template must contain {{n}}, got {template!r}")
    if count < 1:
        raise EndpointsError(f"--count: must be >= 1, got {count}")
    try:
        return [OurEndpoint(template.format(n=first + i), state) for i in range(count)]
    except (KeyError, IndexError, ValueError) as exc:
        raise EndpointsError(f"--users: invalid template {template!r}: {exc}") from None
