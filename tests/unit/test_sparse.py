"""Bm25Encoder over Qdrant's own BM25 model (no hand-written tokenizer anywhere)."""

from __future__ import annotations

import pytest

from groundwire.clients.models import SparseVector
from groundwire.clients.sparse import Bm25Encoder


def weights(vector: SparseVector) -> dict[int, float]:
    return dict(zip(vector.indices, vector.values, strict=True))


def test_query_weighs_each_distinct_term_once() -> None:
    query = Bm25Encoder().encode_query("quick fox, quick FOX")

    assert isinstance(query, SparseVector)
    assert len(query.indices) == 2
    assert query.values == [1.0, 1.0]


def test_documents_and_queries_share_terms_through_stemming_and_case() -> None:
    encoder = Bm25Encoder()
    [document] = encoder.encode_documents(["The Foxes were jumping over lazy dogs."])
    query = encoder.encode_query("fox jumps")

    assert set(query.indices) <= set(document.indices)


def test_stop_words_and_blank_text_give_no_terms() -> None:
    encoder = Bm25Encoder()

    assert encoder.encode_query("the and of").indices == []
    assert encoder.encode_documents(["", "   "]) == [SparseVector([], []), SparseVector([], [])]


def test_term_frequency_saturates_and_length_normalises() -> None:
    encoder = Bm25Encoder()
    once, thrice, long = encoder.encode_documents(
        ["apple", "apple apple apple", "apple " + "banana cherry grape " * 100]
    )
    [term] = encoder.encode_query("apple").indices

    assert weights(once)[term] < weights(thrice)[term] < 1.2 + 1  # bounded by k + 1
    assert weights(long)[term] < weights(once)[term]


def test_b_zero_switches_length_normalisation_off() -> None:
    encoder = Bm25Encoder(b=0.0)
    short, long = encoder.encode_documents(["apple", "apple " + "banana " * 300])
    [term] = encoder.encode_query("apple").indices

    assert weights(short)[term] == pytest.approx(weights(long)[term])


def test_encoding_is_deterministic_across_instances() -> None:
    text = "Hybrid retrieval fuses dense and sparse rankings."

    assert Bm25Encoder().encode_documents([text]) == Bm25Encoder().encode_documents([text])


def test_id_names_the_configuration() -> None:
    assert Bm25Encoder().id == "bm25/k=1.2,b=0.75,avg_len=256"
    assert Bm25Encoder(k=0.9, b=0.4, avg_len=120.5).id == "bm25/k=0.9,b=0.4,avg_len=120.5"


@pytest.mark.parametrize(
    ("k", "b", "avg_len"), [(-0.1, 0.75, 256.0), (1.2, 1.5, 256.0), (1.2, 0.75, 0.0)]
)
def test_invalid_configuration_is_rejected(k: float, b: float, avg_len: float) -> None:
    with pytest.raises(ValueError):
        Bm25Encoder(k=k, b=b, avg_len=avg_len)
