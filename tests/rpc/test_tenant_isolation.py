"""Tenant isolation as a property: whatever tenants store and ask, a call never returns
another tenant's chunk.

Random tenants (two to four of four configured keys) ingest documents that share one small
vocabulary and the same doc ids; then each asks random questions, in every retrieval mode,
with random metadata filters (including ones naming another tenant) and random top-k, through
Retrieve and through Generate's sources. Every document is marked with its owner, in its text
and in its metadata, so each returned chunk can be checked. One server for all examples (the
real MiniLM for dense, a real Redis cache, so a question asked by two tenants also tests
that the cache keeps them apart); data accumulates across examples, which only adds
neighbours to leak from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from groundwire.v1 import common_pb2, documents_pb2, generation_pb2, retrieval_pb2
from tests.rpc.conftest import Running, ServerFactory

TENANTS = {f"tenant-{i}": f"key-isolation-{i}-0123456789" for i in range(4)}
DOC_IDS = ["doc-1", "doc-2", "doc-3"]  # every tenant uses the same ids
VOCABULARY = [
    "river",
    "flood",
    "spring",
    "delta",
    "mill",
    "island",
    "bridge",
    "harbour",
    "salmon",
    "winter",
]
LANGS = ["en", "de", "fr"]
YEARS = [2001, 2002, 2003]
MODES = [
    retrieval_pb2.RETRIEVAL_MODE_DENSE,
    retrieval_pb2.RETRIEVAL_MODE_SPARSE,
    retrieval_pb2.RETRIEVAL_MODE_HYBRID,
]
F = retrieval_pb2.FieldFilter


def _marker(tenant: str) -> str:
    return f"owned by {tenant}"


@dataclass(frozen=True)
class Doc:
    tenant: str
    doc_id: str
    words: tuple[str, ...]
    lang: str
    year: int

    def proto(self) -> documents_pb2.Document:
        return documents_pb2.Document(
            doc_id=self.doc_id,
            title=f"{self.doc_id} of {self.tenant}",
            text=f"{' '.join(self.words)}, {_marker(self.tenant)}.",
            metadata={
                "owner": common_pb2.MetadataValue(string_value=self.tenant),
                "lang": common_pb2.MetadataValue(string_value=self.lang),
                "year": common_pb2.MetadataValue(int_value=self.year),
            },
        )


@dataclass(frozen=True)
class Query:
    words: tuple[str, ...]
    mode: int
    top_k: int
    filters: tuple[retrieval_pb2.FieldFilter, ...]
    generate: bool

    def retrieve(self) -> retrieval_pb2.RetrieveRequest:
        return retrieval_pb2.RetrieveRequest(
            query=" ".join(self.words),
            mode=self.mode,  # type: ignore[arg-type]
            top_k=self.top_k,
            filter=retrieval_pb2.MetadataFilter(must=self.filters),
        )


_words = st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=8).map(tuple)
_filter = st.one_of(
    st.sampled_from(sorted(TENANTS)).map(lambda t: F(field="owner", string_equals=t)),
    st.sampled_from(LANGS).map(lambda lang: F(field="lang", string_equals=lang)),
    st.lists(st.sampled_from(LANGS), min_size=1, max_size=2, unique=True).map(
        lambda v: F(field="lang", string_any=retrieval_pb2.StringList(values=v))
    ),
    st.sampled_from(YEARS).map(lambda y: F(field="year", int_equals=y)),
    st.lists(st.sampled_from(YEARS), min_size=1, max_size=2, unique=True).map(
        lambda v: F(field="year", int_any=retrieval_pb2.IntList(values=v))
    ),
)
# A question may name any tenant, the caller's or another's: the words are in every text.
_query_words = st.tuples(_words, st.sampled_from(["", *(_marker(t) for t in TENANTS)])).map(
    lambda pair: pair[0] + ((pair[1],) if pair[1] else ())
)
_queries = st.builds(
    Query,
    words=_query_words,
    mode=st.sampled_from(MODES),
    top_k=st.integers(1, 20),
    filters=st.lists(_filter, max_size=2).map(tuple),
    generate=st.booleans(),
)


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[list[Doc], list[Query]]:
    tenants = draw(st.lists(st.sampled_from(sorted(TENANTS)), min_size=2, max_size=4, unique=True))
    docs = [
        Doc(
            tenant,
            doc_id,
            draw(_words),
            draw(st.sampled_from(LANGS)),
            draw(st.sampled_from(YEARS)),
        )
        for tenant in tenants
        for doc_id in draw(st.lists(st.sampled_from(DOC_IDS), min_size=1, max_size=3, unique=True))
    ]
    return docs, draw(st.lists(_queries, min_size=1, max_size=3))


def _metadata(tenant: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {TENANTS[tenant]}")]


def _assert_own(tenant: str, texts: list[str], owners: list[str]) -> None:
    others = [_marker(t) for t in TENANTS if t != tenant]
    for text in texts:
        assert _marker(tenant) in text and not any(o in text for o in others), (tenant, text)
    assert all(owner == tenant for owner in owners), (tenant, owners)


@pytest.fixture
async def running(make_server: ServerFactory) -> Running:
    return await make_server(api_keys=TENANTS)


async def _ingest(running: Running, tenant: str, docs: list[Doc]) -> None:
    async def stream() -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
        for doc in docs:
            yield documents_pb2.IngestDocumentsRequest(document=doc.proto())

    response = await running.documents.IngestDocuments(stream(), metadata=_metadata(tenant))
    assert response.failed == 0


@pytest.mark.model
@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=_scenario())
async def test_no_call_returns_another_tenants_chunk(
    running: Running, scenario: tuple[list[Doc], list[Query]]
) -> None:
    docs, queries = scenario
    tenants = sorted({doc.tenant for doc in docs})
    for tenant in tenants:
        await _ingest(running, tenant, [d for d in docs if d.tenant == tenant])
    # Not vacuous: a tenant's own words find its own document.
    first = docs[0]
    found = await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(
            query=" ".join(first.words), mode=retrieval_pb2.RETRIEVAL_MODE_SPARSE, top_k=20
        ),
        metadata=_metadata(first.tenant),
    )
    assert first.doc_id in {c.doc_id for c in found.chunks}
    # Every question is asked by every tenant of the example (the cache sees the same key
    # material but for the tenant).
    for query in queries:
        for tenant in tenants:
            response = await running.retrieval.Retrieve(
                query.retrieve(), metadata=_metadata(tenant)
            )
            _assert_own(
                tenant,
                [c.text for c in response.chunks],
                [c.metadata["owner"].string_value for c in response.chunks],
            )
            if query.generate:
                request = generation_pb2.GenerateRequest(
                    query=" ".join(query.words), retrieval=query.retrieve()
                )
                frames = [
                    f
                    async for f in running.generation.Generate(request, metadata=_metadata(tenant))
                ]
                sources = [s for f in frames if f.HasField("start") for s in f.start.sources]
                _assert_own(tenant, [s.text for s in sources], [])
                assert frames[-1].HasField("end")
    await running.settle()
