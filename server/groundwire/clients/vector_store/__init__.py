"""The two VectorStore implementations: Qdrant Edge in-process (the embedded default) and a
Qdrant server or cluster through ``qdrant-client`` (production). Both store the same payload
and scope every read and write to the tenant inside the store."""

from groundwire.clients.vector_store.edge import EdgeVectorStore
from groundwire.clients.vector_store.qdrant import QdrantVectorStore

__all__ = ["EdgeVectorStore", "QdrantVectorStore"]
