"""The JSON Schemas (draft 2020-12) of summary.json and of each line of intervals.jsonl, shipped in the
package (sipload/data)."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

SUMMARY_SCHEMA = "summary.schema.json"
INTERVALS_SCHEMA = "intervals.schema.json"


def _schema(name: str) -> dict[str, Any]:
    text = files("sipload").joinpath("data", name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def summary_schema() -> dict[str, Any]:
    """The schema as a dict (validate with any draft 2020-12 validator, e.g. `jsonschema`)."""
    return _schema(SUMMARY_SCHEMA)


def intervals_schema() -> dict[str, Any]:
    """The schema of one line of intervals.jsonl (the header or an interval), as a dict."""
    return _schema(INTERVALS_SCHEMA)
