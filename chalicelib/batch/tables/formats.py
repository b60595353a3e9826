"""The batch file formats, by the names keys, job records and renderers use."""

from __future__ import annotations

CSV = "csv"
JSONL = "jsonl"
