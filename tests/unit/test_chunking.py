"""Chunker: exact-substring token windows, with real tokenizers (MiniLM's and whitespace)."""

from __future__ import annotations

import pytest

from groundwire.clients.tokenization import HFTokenizer, WhitespaceTokenizer, bundled_minilm_path
from groundwire.server.pipeline.chunking import Chunker, ChunkSpan


@pytest.fixture(scope="module")
def minilm_tokenizer() -> HFTokenizer:
    return HFTokenizer.from_file(bundled_minilm_path() / "tokenizer.json")


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_short_text_is_one_chunk_without_surrounding_whitespace() -> None:
    text = "  Hello there,\n general Kenobi.  "

    [chunk] = Chunker(WhitespaceTokenizer(), chunk_tokens=10, overlap_tokens=2).split(text)

    assert chunk == ChunkSpan("Hello there,\n general Kenobi.", 2, 31)
    assert text[chunk.start_char : chunk.end_char] == chunk.text


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_text_without_tokens_has_no_chunks(text: str) -> None:
    assert Chunker(WhitespaceTokenizer()).split(text) == []


def test_windows_overlap_by_the_configured_number_of_tokens() -> None:
    chunks = Chunker(WhitespaceTokenizer(), chunk_tokens=10, overlap_tokens=3).split(words(25))

    assert [c.text.split() for c in chunks] == [
        [f"w{i}" for i in range(0, 10)],
        [f"w{i}" for i in range(7, 17)],
        [f"w{i}" for i in range(14, 24)],
        [f"w{i}" for i in range(21, 25)],
    ]


@pytest.mark.parametrize(("n", "expected"), [(10, 1), (11, 2), (17, 2), (18, 3)])
def test_no_window_lies_inside_the_previous_one(n: int, expected: int) -> None:
    chunks = Chunker(WhitespaceTokenizer(), chunk_tokens=10, overlap_tokens=3).split(words(n))

    assert len(chunks) == expected
    assert chunks[-1].text.endswith(f"w{n - 1}")


def test_zero_overlap_partitions_the_tokens() -> None:
    text = words(23)

    chunks = Chunker(WhitespaceTokenizer(), chunk_tokens=5, overlap_tokens=0).split(text)

    assert " ".join(c.text for c in chunks) == text


def test_minilm_chunks_are_exact_substrings_on_token_boundaries(
    minilm_tokenizer: HFTokenizer,
) -> None:
    text = (
        "Tokenization isn't trivial: naïve café owners in 東京 measured 3.14 µm!\n\n"
        "Ünïcödé, e-mail addresses (a@b.example) and URLs https://example.org/x?y=1 "
    ) * 30
    spans = minilm_tokenizer.token_spans(text)
    chunker = Chunker(minilm_tokenizer, chunk_tokens=50, overlap_tokens=10)

    chunks = chunker.split(text)

    assert len(chunks) > 3
    for i, chunk in enumerate(chunks):
        first = i * 40
        last = min(first + 50, len(spans)) - 1
        assert (chunk.start_char, chunk.end_char) == (spans[first][0], spans[last][1])
        assert chunk.text == text[chunk.start_char : chunk.end_char]
    assert chunks[-1].end_char == spans[-1][1]
    assert chunker.split(text) == chunks  # deterministic


def test_default_window_sizes(minilm_tokenizer: HFTokenizer) -> None:
    chunker = Chunker(minilm_tokenizer)

    assert (chunker.chunk_tokens, chunker.overlap_tokens) == (200, 40)


@pytest.mark.parametrize(("chunk", "overlap"), [(10, 10), (10, 11), (0, 0), (10, -1)])
def test_invalid_window_sizes_are_rejected(chunk: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        Chunker(WhitespaceTokenizer(), chunk_tokens=chunk, overlap_tokens=overlap)
