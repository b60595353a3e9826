"""Batch keys: what an input key under ``incoming/`` says, and where its outputs go.

Every batch key is spelled here, both ways: an input key gives its outputs and its
job record; a job record's key gives its input key back.

Layout, in the batch bucket::

    incoming/{model}/{path}             the stage's default alias
    incoming/{model}@{alias}/{path}     an alias (the whole file routed by its key)
    incoming/{model}@{version}/{path}   a pinned version
    outgoing/{model...}/{path}.out            predictions, one row per predicted row
    outgoing/{model...}/{path}.manifest.json  the job record: status, version,
                                              counts, why (the name stays: users'
                                              automation reads it)
    outgoing/{model...}/{path}.errors.jsonl   rejected rows, when there are any
    outgoing/{model...}/{path}.parts/{run}/   a fanned-out run's shards, until the
                                              outputs are assembled (RunKeys)
"""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.batch.tables.formats import CSV, JSONL
from chalicelib.config import INCOMING_PREFIX, OUTGOING_PREFIX
from chalicelib.errors import BatchFileError, BatchKeyError, TurnoutError
from chalicelib.names import (
    is_version,
    parse_version,
    validate_alias_name,
    validate_model_name,
)

INCOMING = INCOMING_PREFIX
OUTGOING = OUTGOING_PREFIX
FORMATS = {".csv": CSV, ".jsonl": JSONL, ".ndjson": JSONL}
CONTENT_TYPES = {CSV: "text/csv", JSONL: "application/x-ndjson"}


@dataclass(frozen=True)
class BatchKey:
    """An input key taken apart: who predicts and how the file reads."""

    key: str
    model: str
    alias: str | None
    version: int | None
    fmt: str
    compressed: bool


RECORD_SUFFIX = ".manifest.json"
OUT_SUFFIX = ".out"
ERRORS_SUFFIX = ".errors.jsonl"


def outputs_base(key: str) -> str:
    """``incoming/X`` -> ``outgoing/X``: the outputs' common prefix.

    BatchKeyError for a key outside ``incoming/``: it has no job (reading it as
    one would name another file's outputs).
    """
    if not key.startswith(INCOMING):
        raise BatchKeyError(key, f"is not under {INCOMING}")
    return OUTGOING + key.removeprefix(INCOMING)


def record_key(key: str) -> str:
    """The job record of the input at ``key``: ``outgoing/X.manifest.json``."""
    return outputs_base(key) + RECORD_SUFFIX


def out_key(key: str) -> str:
    """The predictions of the input at ``key``: ``outgoing/X.out``."""
    return outputs_base(key) + OUT_SUFFIX


def errors_key(key: str) -> str:
    """The rejected rows of the input at ``key``: ``outgoing/X.errors.jsonl``."""
    return outputs_base(key) + ERRORS_SUFFIX


def is_record_key(key: str) -> bool:
    """Whether ``key`` is a job record (``outgoing/X.manifest.json``)."""
    return key.startswith(OUTGOING) and key.endswith(RECORD_SUFFIX)


def input_key(record: str) -> str:
    """``outgoing/X.manifest.json`` -> ``incoming/X``: the input of a job record
    (ValueError for another key)."""
    if not is_record_key(record):
        raise ValueError(f"{record!r} is not a job record key")
    return INCOMING + record.removeprefix(OUTGOING).removesuffix(RECORD_SUFFIX)


def parts_prefix(key: str) -> str:
    """Where the fanned-out runs of the file at ``key`` keep their shards."""
    return outputs_base(key) + ".parts/"


@dataclass(frozen=True)
class ShardDone:
    """What a done marker's key says: which shard, its bytes and its rows."""

    index: int
    size: int
    read: int
    predicted: int
    rejected: int


@dataclass(frozen=True)
class RunKeys:
    """The keys of one fanned-out run's intermediate objects.

    A shard's done marker carries its counts in its key, so that one listing
    says how far the run is.
    """

    prefix: str

    @classmethod
    def of(cls, key: str, run_id: str) -> RunKeys:
        return cls(f"{parts_prefix(key)}{run_id}/")

    def out(self, index: int) -> str:
        return f"{self.prefix}{index:05d}.out"

    def errors(self, index: int) -> str:
        return f"{self.prefix}{index:05d}.errors.jsonl"

    @property
    def done_prefix(self) -> str:
        return self.prefix + "done/"

    def done_of(self, index: int) -> str:
        """The prefix of shard ``index``'s done marker."""
        return f"{self.done_prefix}{index:05d}-"

    def done(self, marker: ShardDone) -> str:
        return (
            f"{self.done_of(marker.index)}{marker.size}-{marker.read}-"
            f"{marker.predicted}-{marker.rejected}.json"
        )

    def parse_done(self, key: str) -> ShardDone:
        """The counts in a done marker's key (ValueError for another key)."""
        fields = key.removeprefix(self.done_prefix).removesuffix(".json").split("-")
        index, size, read, predicted, rejected = map(int, fields)
        return ShardDone(index, size, read, predicted, rejected)

    @property
    def assembler(self) -> str:
        """The claim of the shard that assembles the outputs."""
        return self.prefix + "assembler.json"


def is_batch_input(key: str) -> bool:
    """Whether ``key`` is a file under ``incoming/`` (folder markers are not)."""
    return key.startswith(INCOMING) and not key.endswith("/")


def parse_key(key: str) -> BatchKey:
    """Read the model, its alias or version, and the format from an input key.

    BatchKeyError when the key has no model folder or names an invalid model,
    alias or version; BatchFileError for an unknown file format.
    """
    folder, slash, path = key.removeprefix(INCOMING).partition("/")
    if not slash or not path:
        raise BatchKeyError(key, "has no model folder")
    model, at, selector = folder.partition("@")
    alias: str | None = None
    version: int | None = None
    try:
        validate_model_name(model)
        if at and is_version(selector):
            version = parse_version(selector)
        elif at:
            alias = validate_alias_name(selector)
    except TurnoutError as error:
        raise BatchKeyError(key, f"has an invalid model folder: {error}") from None
    name = path.rsplit("/", 1)[-1].lower()
    compressed = name.endswith(".gz")
    stem = name.removesuffix(".gz")
    extension = "." + stem.rsplit(".", 1)[-1] if "." in stem else ""
    if extension not in FORMATS:
        *others, last = FORMATS
        known = f"{', '.join(others)} or {last}"
        raise BatchFileError(
            f"unknown format {extension or 'without extension'!r}: name the file "
            f"{known}, optionally followed by .gz"
        )
    return BatchKey(key, model, alias, version, FORMATS[extension], compressed)
