"""Split a document into overlapping windows of model tokens.

Windows are counted in the embedder's own tokens, so a chunk never exceeds what the model
reads. A chunk's text is sliced from the original by character offsets (first token's start
to last token's end): it is an exact substring, with no detokenisation artefacts, and its
position in the document is known.
"""

from __future__ import annotations

from dataclasses import dataclass

from groundwire.clients.ports import Tokenizer


@dataclass(frozen=True)
class ChunkSpan:
    """One chunk: ``text == document[start_char:end_char]``."""

    text: str
    start_char: int
    end_char: int


class Chunker:
    """Pure token windows of ``chunk_tokens`` tokens, consecutive windows sharing
    ``overlap_tokens`` tokens. Deterministic: the same text always gives the same chunks.
    """

    def __init__(
        self, tokenizer: Tokenizer, chunk_tokens: int = 200, overlap_tokens: int = 40
    ) -> None:
        """Raise ValueError unless ``0 <= overlap_tokens < chunk_tokens``."""
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
        if overlap_tokens < 0:
            raise ValueError(f"overlap_tokens must not be negative, got {overlap_tokens}")
        if overlap_tokens >= chunk_tokens:
            raise ValueError(
                f"overlap_tokens ({overlap_tokens}) must be smaller than "
                f"chunk_tokens ({chunk_tokens})"
            )
        self._tokenizer = tokenizer
        self._chunk_tokens = chunk_tokens
        self._step = chunk_tokens - overlap_tokens

    @property
    def chunk_tokens(self) -> int:
        """Tokens per window (the last window may be shorter)."""
        return self._chunk_tokens

    @property
    def overlap_tokens(self) -> int:
        """Tokens shared by consecutive windows."""
        return self._chunk_tokens - self._step

    def split(self, text: str) -> list[ChunkSpan]:
        """The chunks of ``text`` in order; none if it has no tokens (empty or blank).

        A text of at most ``chunk_tokens`` tokens is one chunk. The last window ends at the
        last token; no window lies entirely inside the previous one.
        """
        spans = self._tokenizer.token_spans(text)
        chunks: list[ChunkSpan] = []
        start = 0
        while start < len(spans):
            end = min(start + self._chunk_tokens, len(spans))
            start_char, end_char = spans[start][0], spans[end - 1][1]
            chunks.append(ChunkSpan(text[start_char:end_char], start_char, end_char))
            if end == len(spans):
                break
            start += self._step
        return chunks
