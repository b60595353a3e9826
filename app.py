"""Turnout's deployment manifest: every route and event handler, each a few lines.

The work happens in ``chalicelib``: ``http`` speaks the REST protocols over the
prediction core, ``batch`` streams S3 files through the same core.
"""

from __future__ import annotations

from chalice import Chalice

app = Chalice(app_name="turnout")

# --- REST: Open Inference Protocol (V2) and instances ------------------------

# --- Batch: S3 uploads under incoming/ -----------------------------------------
