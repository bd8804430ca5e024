"""The collection groundwire creates on a Qdrant server: its payload indexes, and the check
that an existing collection is one groundwire created for the embedder it runs."""

from __future__ import annotations

from qdrant_client import models

from groundwire.clients.errors import EmbedderMismatchError
from groundwire.clients.models import CollectionInfo
from groundwire.clients.vector_store import collection_record as cr
from groundwire.clients.vector_store import payload as pl


def payload_indexes() -> dict[str, models.PayloadSchemaType | models.KeywordIndexParams]:
    """The payload indexes every collection has: the tenant as a tenant key (``is_tenant``:
    Qdrant keeps each tenant's points together and builds its HNSW graphs per tenant), and
    the document id, for the scoped reads and deletes of ingest."""
    return {
        pl.TENANT_KEY: models.KeywordIndexParams(
            type=models.KeywordIndexType.KEYWORD, is_tenant=True
        ),
        pl.DOC_ID_KEY: models.PayloadSchemaType.KEYWORD,
    }


def check_collection(
    described: models.CollectionInfo, wanted: CollectionInfo, collection: str
) -> None:
    """Raise EmbedderMismatchError unless groundwire created ``collection`` for the embedder
    ``wanted`` names, with the vectors groundwire creates."""
    where = f"Qdrant collection {collection!r}"
    metadata = described.config.metadata or {}
    stored = cr.collection_info(metadata.get(cr.COLLECTION_METADATA_KEY))
    if stored is None:
        raise EmbedderMismatchError(
            f"{where} carries no groundwire record of its embedder (metadata key "
            f"{cr.COLLECTION_METADATA_KEY!r}); it was not created by groundwire. Point "
            "GROUNDWIRE_QDRANT_COLLECTION at another collection, or delete this one."
        )
    remedy = "set GROUNDWIRE_QDRANT_COLLECTION to a new collection"
    cr.check_embedder(stored, wanted.embedder_id, wanted.dimension, where=where, remedy=remedy)
    params = described.config.params
    dense = params.vectors.get(pl.DENSE_VECTOR) if isinstance(params.vectors, dict) else None
    sparse = (params.sparse_vectors or {}).get(pl.SPARSE_VECTOR)
    if (
        (dense.size if dense else 0) != wanted.dimension
        or (dense is not None and dense.distance != models.Distance.COSINE)
        or sparse is None
        or sparse.modifier != models.Modifier.IDF
    ):
        raise EmbedderMismatchError(
            f"{where} records embedder {stored.embedder_id!r}, but its vectors are not the "
            f"ones groundwire creates ({pl.DENSE_VECTOR!r}: cosine, size {wanted.dimension}; "
            f"{pl.SPARSE_VECTOR!r}: IDF); found {dense} and {sparse}. {remedy.capitalize()} "
            "and ingest the documents again."
        )
