"""CitationTracker: citation markers found incrementally in a streamed answer."""

from __future__ import annotations

import random
import re

import pytest

from groundwire.server.pipeline.generation.citations import MAX_MARKER_CHARS, CitationTracker
from groundwire.server.pipeline.generation.types import Citation

SOURCES = {1: "chunk-a", 2: "chunk-b", 3: "chunk-c", 12: "chunk-l"}

# The grammar as a regex, used as an independent oracle over whole texts.
MARKER = re.compile(r"\[([0-9]{1,4}(?: *, *[0-9]{1,4})*)\]")


def cite(number: int, start: int, end: int) -> Citation:
    chunk_id = SOURCES.get(number, "")
    return Citation(number, start, end, chunk_id, number in SOURCES)


def feed_all(deltas: list[str], sources: dict[int, str] = SOURCES) -> list[Citation]:
    tracker = CitationTracker(sources)
    found: list[Citation] = []
    for delta in deltas:
        found.extend(tracker.feed(delta))
    return found


def oracle(text: str, sources: dict[int, str] = SOURCES) -> list[Citation]:
    found: list[Citation] = []
    for match in MARKER.finditer(text):
        if match.end() - match.start() > MAX_MARKER_CHARS:
            continue
        for part in match.group(1).split(","):
            number = int(part.strip())
            found.append(
                Citation(
                    number,
                    match.start(),
                    match.end(),
                    sources.get(number, ""),
                    number in sources,
                )
            )
    return found


def test_single_marker() -> None:
    tracker = CitationTracker(SOURCES)

    assert tracker.feed("Aspirin lowers fever [1].") == [cite(1, 21, 24)]
    assert tracker.text_length == 25


def test_marker_is_reported_by_the_delta_that_closes_it() -> None:
    tracker = CitationTracker(SOURCES)

    assert tracker.feed("Fever [") == []
    assert tracker.feed("1") == []
    assert tracker.feed("2") == []
    assert tracker.feed("] and more") == [cite(12, 6, 10)]


def test_number_split_across_deltas_is_one_number() -> None:
    assert feed_all(["see [1", "2]"]) == [cite(12, 4, 8)]


def test_several_markers_in_one_delta_in_order() -> None:
    text = "A [1]. B [2][3]. C [12]."

    assert feed_all([text]) == [cite(1, 2, 5), cite(2, 9, 12), cite(3, 12, 15), cite(12, 19, 23)]


def test_list_marker_gives_one_citation_per_number_with_the_marker_span() -> None:
    assert feed_all(["x [1, 3] y [2,1] z [3 ,  2]"]) == [
        cite(1, 2, 8),
        cite(3, 2, 8),
        cite(2, 11, 16),
        cite(1, 11, 16),
        cite(3, 19, 27),
        cite(2, 19, 27),
    ]


def test_list_marker_split_inside_the_separator() -> None:
    assert feed_all(["[1", ",", " ", "2", "]"]) == [cite(1, 0, 6), cite(2, 0, 6)]


def test_unknown_numbers_are_invalid_and_never_remapped() -> None:
    found = feed_all(["[0] [4] [9999] [2]"])

    assert [(c.number, c.valid, c.chunk_id) for c in found] == [
        (0, False, ""),
        (4, False, ""),
        (9999, False, ""),
        (2, True, "chunk-b"),
    ]


def test_list_with_an_unknown_number_keeps_the_valid_ones() -> None:
    assert feed_all(["[1, 7]"]) == [cite(1, 0, 6), Citation(7, 0, 6, "", False)]


def test_no_sources_makes_every_citation_invalid() -> None:
    assert feed_all(["[1]"], sources={}) == [Citation(1, 0, 3, "", False)]


def test_sources_are_copied() -> None:
    sources = {1: "chunk-a"}
    tracker = CitationTracker(sources)
    sources[1] = "changed"

    assert tracker.feed("[1]") == [Citation(1, 0, 3, "chunk-a", True)]


@pytest.mark.parametrize(
    "text",
    [
        "[a]",
        "[]",
        "[1.5]",
        "[12345]",
        "[1,]",
        "[,1]",
        "[1 2]",
        "[ 1]",
        "[1 ]",
        "[-1]",
        "[1;2]",
        "[\uff11]",  # fullwidth digit one
        "[²]",
        "[1",
        "an unclosed [ bracket",
        "(1) {1} <1>",
        "[[link]](http://example.com)",
    ],
)
def test_non_markers_are_plain_text(text: str) -> None:
    assert feed_all([text]) == []


def test_a_bracket_that_breaks_a_marker_starts_a_new_one() -> None:
    assert feed_all(["[[1]"]) == [cite(1, 1, 4)]
    assert feed_all(["[x[2]"]) == [cite(2, 2, 5)]
    assert feed_all(["[1[2]"]) == [cite(2, 2, 5)]
    assert feed_all(["[1, [3]"]) == [cite(3, 4, 7)]


def test_a_marker_right_after_a_failed_one() -> None:
    assert feed_all(["[12345][1]"]) == [cite(1, 7, 10)]
    assert feed_all(["[a][2]"]) == [cite(2, 3, 6)]


def test_markers_up_to_the_length_limit_are_accepted_and_longer_ones_are_not() -> None:
    numbers = ", ".join(["1"] * 11)  # "[1, 1, ..., 1]" is 33 characters
    too_long = f"[{numbers}]"
    assert len(too_long) == MAX_MARKER_CHARS + 1
    longest = "[" + ",".join(["1"] * 14) + ",22]"
    assert len(longest) == MAX_MARKER_CHARS

    assert feed_all([too_long]) == []
    assert len(feed_all([longest])) == 15


def test_an_unclosed_bracket_is_given_up_and_later_markers_still_count() -> None:
    tracker = CitationTracker(SOURCES)
    assert tracker.feed("[1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3") == []

    assert tracker.feed(", 3] then [2]") == [cite(2, 48, 51)]


def test_offsets_count_code_points_not_bytes_or_utf16_units() -> None:
    tracker = CitationTracker(SOURCES)

    assert tracker.feed("café [1] ") == [cite(1, 5, 8)]
    assert tracker.feed("🙂🙂 [2]") == [cite(2, 12, 15)]
    assert tracker.feed("e\u0301 [3]") == [cite(3, 18, 21)]  # a combining accent is its own
    assert tracker.text_length == 21


def test_empty_deltas_change_nothing() -> None:
    tracker = CitationTracker(SOURCES)
    assert tracker.feed("") == []
    assert tracker.feed("[") == []
    assert tracker.feed("") == []

    assert tracker.feed("1]") == [cite(1, 0, 3)]
    assert tracker.text_length == 3


def test_long_text_without_markers() -> None:
    tracker = CitationTracker(SOURCES)
    text = "Plain prose without any markers, but [brackets] and (parens). " * 2000

    assert tracker.feed(text) == []
    assert tracker.feed("[1]") == [cite(1, len(text), len(text) + 3)]
    assert tracker.text_length == len(text) + 3


SAMPLE = (
    "Aspirin lowers fever [1]. It also eases pain [2][3], e.g. headaches [1, 12]. "
    "Doses of 3.5 mg [4] are unusual; [a] and [] are not citations, nor is [12345]. "
    "Café 🙂 [2,3] works [[1]"
)


def test_every_single_split_point_gives_the_same_citations_as_the_whole() -> None:
    whole = feed_all([SAMPLE])
    assert whole == oracle(SAMPLE)
    assert len(whole) == 9

    for split in range(len(SAMPLE) + 1):
        assert feed_all([SAMPLE[:split], SAMPLE[split:]]) == whole, split


def test_every_pair_of_split_points_gives_the_same_citations() -> None:
    text = "x [1, 2] y [3][12] z [0]"
    whole = feed_all([text])

    for first in range(len(text) + 1):
        for second in range(first, len(text) + 1):
            deltas = [text[:first], text[first:second], text[second:]]
            assert feed_all(deltas) == whole, (first, second)


def test_character_by_character_matches_the_whole() -> None:
    assert feed_all(list(SAMPLE)) == feed_all([SAMPLE])


def test_random_texts_and_splits_match_the_regex_oracle() -> None:
    rng = random.Random(20240607)
    alphabet = "[[[]]],, 0123456789a.é🙂"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        cuts = sorted(rng.randint(0, len(text)) for _ in range(rng.randint(0, 5)))
        deltas = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        tracker = CitationTracker(SOURCES)
        found = [c for delta in deltas for c in tracker.feed(delta)]

        assert found == oracle(text), (text, cuts)
        assert tracker.text_length == len(text)
