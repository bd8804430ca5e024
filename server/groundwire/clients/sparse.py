"""BM25 sparse vectors from Qdrant's own ``Bm25`` model (shipped in ``qdrant-edge-py``).

Qdrant's tokenizer (English words, lowercased, stop words removed, Snowball-stemmed) turns
text into hashed term ids. Documents get BM25 term-frequency weights with length
normalisation; queries get weight 1.0 per distinct term. IDF is not in these vectors: the
store applies it (``Modifier.IDF`` on the sparse vector), so the same encoder serves the
embedded Qdrant Edge and a Qdrant server alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import qdrant_edge

from groundwire.clients.models import SparseVector

# Qdrant's defaults (standard BM25): k=1.2 term-frequency saturation, b=0.75 length
# normalisation, avg_len=256 expected tokens per document. Our chunks are ~200 model tokens,
# i.e. fewer BM25 terms than that after stop words; a measured average can be passed in.
DEFAULT_K = 1.2
DEFAULT_B = 0.75
DEFAULT_AVG_LEN = 256.0


class Bm25Encoder:
    """``ports.SparseEncoder`` over ``qdrant_edge.Bm25``.

    Calls are synchronous and take microseconds per passage (Rust), so they run inline.
    """

    def __init__(
        self, *, k: float = DEFAULT_K, b: float = DEFAULT_B, avg_len: float = DEFAULT_AVG_LEN
    ) -> None:
        """Raise ValueError for ``k < 0``, ``b`` outside [0, 1] or ``avg_len <= 0``."""
        if k < 0:
            raise ValueError(f"BM25 k must be >= 0, got {k}")
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"BM25 b must be within [0, 1], got {b}")
        if avg_len <= 0:
            raise ValueError(f"BM25 avg_len must be > 0, got {avg_len}")
        self._k = k
        self._b = b
        self._avg_len = avg_len
        self._model = qdrant_edge.Bm25(qdrant_edge.Bm25Config(k=k, b=b, avg_len=avg_len))

    @property
    def id(self) -> str:
        """The configuration as a stable string, e.g. ``bm25/k=1.2,b=0.75,avg_len=256``
        (part of cache keys: another configuration scores differently)."""
        return f"bm25/k={self._k:g},b={self._b:g},avg_len={self._avg_len:g}"

    def encode_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        """Term-frequency vectors for passages (empty for a text with no terms)."""
        return [_convert(self._model.embed_document(text)) for text in texts]

    def encode_query(self, text: str) -> SparseVector:
        """Weight 1.0 for each distinct query term."""
        return _convert(self._model.embed_query(text))


def _convert(vector: qdrant_edge.SparseVector) -> SparseVector:
    return SparseVector(
        indices=[int(i) for i in vector.indices], values=[float(v) for v in vector.values]
    )
