"""JSON documents in S3 with compare-and-swap, on moto."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from chalicelib.documents import NOT_MODIFIED, JsonDocuments
from chalicelib.errors import DocumentConflictError
from tests.demo_support import MODEL_BUCKET

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

KEY = "some/document.json"


@pytest.fixture
def documents(s3: S3Client) -> JsonDocuments:
    return JsonDocuments(s3, MODEL_BUCKET)


def test_a_missing_document_reads_as_none(documents: JsonDocuments) -> None:
    assert documents.read(KEY) is None
    assert documents.etag(KEY) is None


def test_a_document_is_created_once_then_changed_on_its_etag(
    documents: JsonDocuments,
) -> None:
    first = documents.write(KEY, {"n": 1}, etag=None)
    assert documents.read(KEY) == ({"n": 1}, first)
    assert documents.etag(KEY) == first
    with pytest.raises(DocumentConflictError) as caught:
        documents.write(KEY, {"n": 2}, etag=None)
    assert str(caught.value) == (
        f"{KEY} changed since it was read: read it again and retry"
    )
    second = documents.write(KEY, {"n": 2}, etag=first)
    with pytest.raises(DocumentConflictError):
        documents.write(KEY, {"n": 3}, etag=first)
    assert documents.read(KEY) == ({"n": 2}, second)


def test_a_write_on_the_etag_of_a_deleted_document_conflicts(
    documents: JsonDocuments, s3: S3Client
) -> None:
    etag = documents.write(KEY, {"n": 1}, etag=None)
    s3.delete_object(Bucket=MODEL_BUCKET, Key=KEY)
    with pytest.raises(DocumentConflictError):
        documents.write(KEY, {"n": 2}, etag=etag)
    assert documents.read(KEY) is None


def test_a_document_still_at_a_known_etag_is_not_transferred(
    documents: JsonDocuments,
) -> None:
    first = documents.write(KEY, {"n": 1}, etag=None)
    assert documents.read(KEY, unless_etag=first) == (NOT_MODIFIED, first)
    second = documents.write(KEY, {"n": 2}, etag=first)
    assert documents.read(KEY, unless_etag=first) == ({"n": 2}, second)
