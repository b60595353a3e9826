"""What the ``turnout`` command prints for people: tables and lines (pure).

Weights print as ``1=90 2=10`` and a shadow as ``3:5``, the syntax ``alias set``
takes, everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chalicelib.aliases.document import AliasDocument, Capture, Shadow
from chalicelib.batch.operations import (
    UNKNOWN_ALIAS,
    UNKNOWN_MODEL,
    UNKNOWN_VERSION,
    JobStatus,
    failure_cause,
)
from chalicelib.batch.record import DEAD, FAILED, RUNNING
from chalicelib.metrics_query import VersionMetrics
from chalicelib.registry.manifest import Manifest, TensorSpec


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Left-aligned columns two spaces apart; empty cells show as '-'."""
    cells = [list(headers)] + [
        [str(value) if value not in (None, "") else "-" for value in row]
        for row in rows
    ]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return [
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in cells
    ]


def plural(count: int, noun: str) -> str:
    """(1, 'row') -> '1 row', (2, 'row') -> '2 rows'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def quantity(value: float) -> str:
    """90 -> '90', 90.0 -> '90', 2.5 -> '2.5': as an operator would type it."""
    return str(int(value)) if float(value).is_integer() else str(value)


def format_routing(weights: Mapping[int, float]) -> str:
    """{1: 90, 2: 10} -> '1=90 2=10', the syntax ``alias set`` takes."""
    return " ".join(f"{v}={quantity(w)}" for v, w in sorted(weights.items()))


def format_shadow(shadow: Shadow | None) -> str:
    """Shadow(3, 5) -> '3:5', the syntax ``--shadow`` takes; '' for none."""
    return f"{shadow.version}:{quantity(shadow.percent)}" if shadow else ""


def format_capture(capture: Capture | None) -> str:
    """Capture(10, ('inputs',)) -> '10% inputs' ('' for none): a table cell."""
    if capture is None:
        return ""
    return f"{quantity(capture.percent)}% {','.join(capture.keep)}"


def describe_capture(capture: Capture | None) -> str:
    """What an alias captures, as a phrase."""
    if capture is None:
        return "nothing"
    return (
        f"{quantity(capture.percent)}% of the requests, "
        f"keeping {' and '.join(capture.keep)}"
    )


def alias_lines(document: AliasDocument) -> list[str]:
    """An alias for people: its revision, who changed it and why, its traffic,
    shadow and capture."""
    current = document.current
    total = sum(document.weights.values())
    shares = ", ".join(
        f"{100 * weight / total:.4g}% to version {version}"
        for version, weight in sorted(document.weights.items())
    )
    shadow = document.shadow
    lines = [
        f"{document.name}@{document.alias} revision {current.revision}",
        f"  updated  {current.updated_at} by {current.actor}",
    ]
    if current.reason:
        lines.append(f"  reason   {current.reason}")
    lines += [
        f"  routing  {format_routing(document.weights)} ({shares})",
        "  shadow   "
        + (
            f"{format_shadow(shadow)} (version {shadow.version} gets a copy of "
            f"{quantity(shadow.percent)}% of the requests)"
            if shadow
            else "none"
        ),
        f"  capture  {describe_capture(document.capture)}",
    ]
    return lines


def capture_lines(document: AliasDocument) -> list[str]:
    """What an alias captures, for people."""
    return [
        f"{document.name}@{document.alias} revision {document.revision} captures "
        f"{describe_capture(document.capture)}"
    ]


def _specs(specs: Sequence[TensorSpec]) -> list[str]:
    return [
        "  " + line
        for line in format_table(
            ["NAME", "DATATYPE", "SHAPE"],
            [(s.name, s.datatype, f"[{', '.join(map(str, s.shape))}]") for s in specs],
        )
    ]


def manifest_lines(manifest: Manifest) -> list[str]:
    """A version for people: provenance, integrity and signature."""
    producer = " ".join(part for part in manifest.producer.values() if part)
    fields = [
        ("description", manifest.description),
        ("created", manifest.created_at),
        ("size", f"{manifest.size} bytes"),
        ("sha256", manifest.sha256),
        ("producer", producer),
        ("opset", ", ".join(f"{d} {v}" for d, v in sorted(manifest.opset.items()))),
        ("ir version", str(manifest.ir_version)),
        ("tags", ", ".join(f"{k}={v}" for k, v in sorted(manifest.tags.items()))),
        ("labels", ", ".join(manifest.labels or ())),
    ]
    width = max(len(key) for key, _ in fields)
    return (
        [f"{manifest.name} version {manifest.version}"]
        + [f"  {key.ljust(width)}  {value or '-'}" for key, value in fields]
        + ["inputs"]
        + _specs(manifest.inputs)
        + ["outputs"]
        + _specs(manifest.outputs)
    )


def job_target(record: Mapping[str, Any]) -> str:
    """What a job ran: 'iris (2)', 'iris (prod)', or '-' before it knew."""
    model = record.get("model")
    if not model:
        return "-"
    target = record.get("version") or record.get("alias")
    return f"{model} ({target})" if target else str(model)


def job_lines(job: JobStatus) -> list[str]:
    """A batch job for people: its state, what it ran, its counts, what to do."""
    key, state, record = job.key, job.state, job.record
    rows = record.get("rows", {})
    lines = [
        f"{key}: {state}",
        f"  model     {job_target(record)}",
        f"  rows      {rows.get('read', 0)} read, {rows.get('predicted', 0)} "
        f"predicted, {rows.get('rejected', 0)} rejected",
        f"  run       {record.get('run_id')} started {record.get('started_at')}",
    ]
    progress = record.get("progress")
    if progress and state in (RUNNING, DEAD):
        lines.append(f"  progress  {progress_text(progress)}")
    if record.get("shards"):
        lines.append(
            f"  shards    {len(record['shards'])} (their rows and seconds: --json)"
        )
    output, errors = record.get("output"), record.get("errors")
    if output:
        lines.append(f"  output    {output['key']} ({output['size']} bytes)")
    if errors:
        lines.append(f"  errors    {errors['key']} ({plural(errors['rows'], 'row')})")
    expires = record.get("claim", {}).get("expires_at")
    if state == RUNNING:
        lines.append(f"  claim     held until {expires}")
    elif state == DEAD:
        lines += [
            f"  claim     expired at {expires} without a final job record: the "
            "function stopped (out of memory, or killed)",
            f"  next      turnout batch retry {key}   (if it dies again, split the "
            "file or give the function more memory)",
        ]
    elif state == FAILED:
        lines.append(f"  error     {record.get('error')}")
        lines.append(f"  next      {next_step(job)}")
    return lines


def next_step(job: JobStatus) -> str:
    """What to do about a failed job, following why it failed."""
    record, key = job.record, job.key
    model, alias = record.get("model"), record.get("alias")
    retry = f"turnout batch retry {key}"
    cause = failure_cause(record)
    if cause == UNKNOWN_MODEL:
        return (
            f"no model {model!r} is registered: upload the file under "
            f"incoming/MODEL/ of a registered model (turnout models lists them), "
            f"or register {model} (turnout register {model} FILE) and then {retry}"
        )
    if cause == UNKNOWN_ALIAS:
        return (
            f"set the alias (turnout alias set {model} {alias} VERSION=WEIGHT) and "
            f"then {retry}, or upload the file under another model folder "
            f"(turnout alias list {model} lists its aliases)"
        )
    if cause == UNKNOWN_VERSION:
        return (
            f"upload the file under incoming/{model}@VERSION/ of an existing "
            f"version (turnout versions {model} lists them)"
        )
    if record.get("retryable"):
        return retry
    return "fix the file and upload it again"


def progress_text(progress: Mapping[str, Any]) -> str:
    """'3/8 shards, 120/320 MB (37%), 4,100,000 rows' for a fanned-out job."""
    done, total = progress.get("bytes_done", 0), progress.get("bytes", 0)
    share = f" ({100 * done / total:.0f}%)" if total else ""
    return (
        f"{progress.get('shards_done', 0)}/{progress.get('shards', 0)} shards, "
        f"{done / 1e6:.0f}/{total / 1e6:.0f} MB{share}, "
        f"{progress.get('rows_done', 0):,} rows"
    )


def jobs_table(jobs: Sequence[JobStatus]) -> list[str]:
    """One line per job: its key, state, rows and start."""
    return format_table(
        ("KEY", "STATE", "ROWS", "REJECTED", "STARTED"),
        [
            (
                job.key,
                job.state,
                job.record.get("rows", {}).get("read", 0),
                job.record.get("rows", {}).get("rejected", 0),
                job.record.get("started_at"),
            )
            for job in jobs
        ],
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}%"


def _milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def metrics_lines(name: str, figures: Sequence[VersionMetrics]) -> list[str]:
    """Each version's figures, for people."""
    if not figures:
        return [f"no metrics for {name} in that window"]
    headers = "VERSION REQUESTS ERRORS MEAN_MS P50_MS P99_MS SHADOW AGREEMENT"
    return format_table(
        headers.split(),
        [
            (
                f.version,
                f.requests,
                _percent(None if f.error_rate is None else 100 * f.error_rate),
                _milliseconds(f.latency_mean_ms),
                _milliseconds(f.latency_p50_ms),
                _milliseconds(f.latency_p99_ms),
                f.shadow_runs,
                _percent(f.shadow_agreement),
            )
            for f in figures
        ],
    )
