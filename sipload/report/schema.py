"""The JSON Schema (draft 2020-12) of summary.json, shipped in the package (sipload/data)."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

SUMMARY_SCHEMA = "summary.schema.json"


def summary_schema() -> dict[str, Any]:
    """The schema as a dict (validate with any draft 2020-12 validator, e.g. `jsonschema`)."""
    text = files("sipload").joinpath("data", SUMMARY_SCHEMA).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
