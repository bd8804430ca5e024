"""The extractive fallback answer, scored with the real BM25 encoder, on passages that are
real chunking output where overlaps matter."""

from __future__ import annotations

import re

import pytest

from groundwire.clients.sparse import Bm25Encoder
from groundwire.clients.tokenization import HFTokenizer, bundled_minilm_path
from groundwire.server.pipeline.chunking import Chunker, ChunkSpan
from groundwire.server.pipeline.generation.extractive import (
    ELLIPSIS,
    extractive_answer,
    split_sentences,
)

FEVER = (
    "Fever is a common symptom of infection. It is usually harmless in adults. "
    "Most fevers resolve within three days without treatment."
)
ASPIRIN = (
    "Aspirin is a nonsteroidal anti-inflammatory drug. Aspirin lowers fever by blocking "
    "prostaglandin synthesis in the hypothalamus. It is also taken to prevent heart attacks."
)
PARACETAMOL = (
    "Paracetamol is another common painkiller. Unlike aspirin, it has almost no "
    "anti-inflammatory effect. Overdoses of paracetamol damage the liver."
)


@pytest.fixture(scope="module")
def encoder() -> Bm25Encoder:
    return Bm25Encoder()


# ---- split_sentences ----------------------------------------------------------------------


def test_splits_on_terminal_punctuation() -> None:
    assert split_sentences("One fish. Two fish! Red fish? Blue fish.") == [
        "One fish.",
        "Two fish!",
        "Red fish?",
        "Blue fish.",
    ]


@pytest.mark.parametrize(
    "sentence",
    [
        "Painkillers, e.g. aspirin, lower fever.",
        "Painkillers, e.g. Aspirin, lower fever.",
        "Painkillers, i.e. NSAIDs, lower fever.",
        "Smith et al. (2019) measured the effect.",
        "Smith et al. Found the same effect.",
        "See Fig. 3 for the dose curve.",
        "See Figs. 3 and 4 for the curves.",
        "Dr. Jones prescribed it.",
        "Prof. Lee and Mr. Brown disagreed.",
        "The dose was 3.5 mg per kilogram.",
        "Doses from 0.5 to 1.5 g were tested.",
        "The trial by J. Smith was small.",
        "J. R. R. Tolkien was not a pharmacist.",
        "Sales in the U.S. Market doubled.",
        "Patient No. 5 recovered.",
        "It costs approx. 3 dollars.",
        "It rose (cf. Table 2) sharply.",
        "Wait... what happened?",
    ],
)
def test_abbreviations_and_decimals_do_not_split(sentence: str) -> None:
    assert split_sentences(sentence) == [sentence]


def test_a_real_sentence_end_after_a_word_that_is_only_sometimes_an_abbreviation() -> None:
    assert split_sentences("The answer is no. Then we stopped.") == [
        "The answer is no.",
        "Then we stopped.",
    ]
    assert split_sentences("It ended on page p. 12 of the report.") == [
        "It ended on page p. 12 of the report."
    ]


def test_closing_quotes_and_brackets_stay_with_their_sentence() -> None:
    assert split_sentences('He said "stop." Then he left. (It was late.) Next.') == [
        'He said "stop."',
        "Then he left.",
        "(It was late.)",
        "Next.",
    ]
    assert split_sentences("She said \u201cstop.\u201d Then she left.") == [
        "She said \u201cstop.\u201d",
        "Then she left.",
    ]


def test_a_single_newline_is_wrapping_but_a_blank_line_is_a_break() -> None:
    text = "Aspirin lowers\nfever in most\npatients. It is cheap\n\nDosage\n\nTake it with water."

    assert split_sentences(text) == [
        "Aspirin lowers fever in most patients.",
        "It is cheap",
        "Dosage",
        "Take it with water.",
    ]


def test_list_items_are_sentences_without_their_bullets() -> None:
    text = "Side effects include:\n- stomach upset\n* bleeding\n1. tinnitus\n2) rash"

    assert split_sentences(text) == [
        "Side effects include:",
        "stomach upset",
        "bleeding",
        "tinnitus",
        "rash",
    ]


def test_whitespace_is_collapsed_and_empty_fragments_dropped() -> None:
    assert split_sentences("  Too   many\tspaces.  ...  !  \n\n  \n") == ["Too many spaces."]
    assert split_sentences("") == []
    assert split_sentences(" \n\n ") == []


def test_non_ascii_text() -> None:
    assert split_sentences("Café au lait. Élan vital 🙂. Über alles.") == [
        "Café au lait.",
        "Élan vital 🙂.",
        "Über alles.",
    ]


# ---- extractive_answer --------------------------------------------------------------------


def test_picks_the_sentence_that_answers(encoder: Bm25Encoder) -> None:
    passages = [(1, FEVER), (2, ASPIRIN), (3, PARACETAMOL)]

    answer = extractive_answer("How does aspirin lower a fever?", passages, encoder)

    assert answer.startswith(
        "Aspirin lowers fever by blocking prostaglandin synthesis in the hypothalamus [2]."
    )


def test_citation_numbers_are_the_passages_own_numbers(encoder: Bm25Encoder) -> None:
    passages = [(7, PARACETAMOL), (4, ASPIRIN)]

    answer = extractive_answer("paracetamol liver damage", passages, encoder, max_sentences=1)

    assert answer == "Overdoses of paracetamol damage the liver [7]."


def test_sentences_come_best_first_not_in_passage_order(encoder: Bm25Encoder) -> None:
    passages = [
        (1, "Aspirin is cheap. Tablets are white."),
        (2, "Aspirin lowers fever quickly."),
        (3, "Aspirin lowers fever by blocking prostaglandin."),
    ]

    answer = extractive_answer("aspirin fever prostaglandin", passages, encoder)

    assert answer == (
        "Aspirin lowers fever by blocking prostaglandin [3]. "
        "Aspirin lowers fever quickly [2]. "
        "Aspirin is cheap [1]."
    )


def test_rarer_query_terms_count_more(encoder: Bm25Encoder) -> None:
    passages = [
        (1, "Aspirin is old. Aspirin is cheap. Aspirin is common."),
        (2, "Tinnitus can be a side effect."),
    ]

    answer = extractive_answer("aspirin tinnitus", passages, encoder, max_sentences=2)

    assert answer.startswith("Tinnitus can be a side effect [2].")


def test_only_sentences_sharing_a_term_are_used(encoder: Bm25Encoder) -> None:
    passages = [(1, FEVER), (2, ASPIRIN)]

    answer = extractive_answer("heart attacks", passages, encoder, max_sentences=3)

    assert answer == "It is also taken to prevent heart attacks [2]."


def test_ties_go_to_the_higher_ranked_passage_then_the_earlier_sentence(
    encoder: Bm25Encoder,
) -> None:
    passages = [
        (5, "Unrelated text. Ibuprofen helps. Ibuprofen works."),
        (2, "Ibuprofen acts."),
    ]

    answer = extractive_answer("ibuprofen", passages, encoder, max_sentences=3)

    assert answer == "Ibuprofen helps [5]. Ibuprofen works [5]. Ibuprofen acts [2]."


def test_max_sentences_limits_the_answer(encoder: Bm25Encoder) -> None:
    passages = [(1, FEVER), (2, ASPIRIN), (3, PARACETAMOL)]

    answer = extractive_answer("aspirin", passages, encoder, max_sentences=2)

    assert answer.count("[") == 2


def test_no_overlap_falls_back_to_the_first_sentence_of_the_first_passage(
    encoder: Bm25Encoder,
) -> None:
    passages = [(3, FEVER), (1, ASPIRIN)]

    assert (
        extractive_answer("quantum chromodynamics", passages, encoder)
        == "Fever is a common symptom of infection [3]."
    )
    assert (
        extractive_answer("what is it?", passages, encoder)  # nothing but stop words
        == "Fever is a common symptom of infection [3]."
    )


def test_fallback_skips_a_first_passage_without_sentences(encoder: Bm25Encoder) -> None:
    assert extractive_answer("zebra", [(1, "  \n "), (2, FEVER)], encoder) == (
        "Fever is a common symptom of infection [2]."
    )


def test_empty_input_gives_an_empty_answer(encoder: Bm25Encoder) -> None:
    assert extractive_answer("aspirin", [], encoder) == ""
    assert extractive_answer("aspirin", [(1, ""), (2, "  ")], encoder) == ""


def test_abbreviations_do_not_cut_the_chosen_sentence(encoder: Bm25Encoder) -> None:
    passage = (
        "Dr. Smith et al. reported that aspirin, e.g. 3.5 mg per kg, lowered fever "
        "in children (see Fig. 2). The study was small."
    )

    answer = extractive_answer("aspirin fever children", [(1, passage)], encoder)

    assert answer == (
        "Dr. Smith et al. reported that aspirin, e.g. 3.5 mg per kg, lowered fever "
        "in children (see Fig. 2) [1]."
    )


def test_a_long_sentence_is_cut_at_a_word_boundary(encoder: Bm25Encoder) -> None:
    sentence = "Aspirin " + " ".join(f"word{i}" for i in range(200)) + "."

    answer = extractive_answer("aspirin", [(1, sentence)], encoder, max_sentence_chars=50)

    body = answer.removesuffix(" [1]")
    assert body.endswith(ELLIPSIS)
    assert len(body) <= 50
    assert sentence.startswith(body.removesuffix(ELLIPSIS) + " ")


def test_a_sentence_of_exactly_the_limit_is_kept_whole(encoder: Bm25Encoder) -> None:
    sentence = "Aspirin lowers fever."

    answer = extractive_answer(
        "aspirin", [(1, sentence)], encoder, max_sentence_chars=len(sentence)
    )

    assert answer == "Aspirin lowers fever [1]."


def test_a_single_huge_word_is_cut_hard(encoder: Bm25Encoder) -> None:
    cut = extractive_answer("zzz", [(1, "a" * 100)], encoder, max_sentence_chars=10)
    assert cut == "a" * 9 + ELLIPSIS + " [1]"


def test_a_sentence_repeated_by_overlapping_chunks_is_used_once(encoder: Bm25Encoder) -> None:
    passages = [
        (1, "Aspirin lowers fever. It thins the blood."),
        (2, "It thins the blood. Aspirin lowers fever."),
    ]

    answer = extractive_answer("aspirin fever blood", passages, encoder)

    assert answer.count("Aspirin lowers fever") == 1
    assert answer.count("It thins the blood") == 1
    assert "[2]" not in answer


def test_reference_markers_inside_passages_are_dropped(encoder: Bm25Encoder) -> None:
    passage = "Aspirin lowers fever [14]. It was first made in 1897 [3, 4]."

    answer = extractive_answer("aspirin fever 1897", [(2, passage)], encoder)

    assert answer == "Aspirin lowers fever [2]. It was first made in 1897 [2]."


def test_marker_goes_before_the_final_punctuation_or_at_the_end(encoder: Bm25Encoder) -> None:
    passage = "Does aspirin lower fever? Yes, aspirin works!\n\nAspirin dosage"

    answer = extractive_answer("aspirin", [(1, passage)], encoder)

    assert "Does aspirin lower fever [1]?" in answer
    assert "Yes, aspirin works [1]!" in answer
    assert "Aspirin dosage [1]" in answer
    assert answer.count("[1]") == 3


def test_is_deterministic(encoder: Bm25Encoder) -> None:
    passages = [(1, FEVER), (2, ASPIRIN), (3, PARACETAMOL)]
    answers = {extractive_answer("aspirin fever painkiller", passages, encoder) for _ in range(5)}

    assert len(answers) == 1


@pytest.mark.parametrize(("sentences", "chars"), [(0, 400), (3, 0)])
def test_rejects_limits_below_one(encoder: Bm25Encoder, sentences: int, chars: int) -> None:
    with pytest.raises(ValueError):
        extractive_answer(
            "aspirin", [(1, FEVER)], encoder, max_sentences=sentences, max_sentence_chars=chars
        )


# ---- overlapping chunks of one document (real chunking) ----------------------------------

DOCUMENT = " ".join(
    [
        "Aspirin is one of the oldest drugs still in use.",
        "It was first made by Bayer in 1897 from the bark of the willow tree.",
        "Aspirin lowers fever by blocking prostaglandin synthesis in the hypothalamus, which "
        "resets the body's thermostat.",
        "It also thins the blood, so doctors prescribe low doses to prevent heart attacks and "
        "strokes.",
        "Children with viral infections should not take it because of the risk of Reye's syndrome.",
        "Paracetamol lowers fever as well but has almost no anti-inflammatory effect.",
        "Overdoses of paracetamol damage the liver.",
    ]
)


@pytest.fixture(scope="module")
def minilm() -> HFTokenizer:
    return HFTokenizer.from_file(bundled_minilm_path() / "tokenizer.json")


def chunked(tokenizer: HFTokenizer, chunk_tokens: int, overlap_tokens: int) -> list[ChunkSpan]:
    chunks = Chunker(tokenizer, chunk_tokens, overlap_tokens).split(DOCUMENT)
    assert len(chunks) > 2  # the test is about overlaps: several chunks
    return chunks


def cited_sentences(answer: str) -> list[tuple[str, list[int]]]:
    """(sentence without its marker and final punctuation, cited numbers) for each sentence
    of ``answer``; every marker of the answer is in one of them."""
    found = re.findall(r"(.+?) \[(\d+(?:, \d+)*)\][.!?]*(?: |$)", answer)
    assert sum(len(numbers.split(", ")) for _, numbers in found) == len(
        re.findall(r"\d+", "".join(re.findall(r"\[[\d, ]+\]", answer)))
    )
    return [(body, [int(n) for n in numbers.split(", ")]) for body, numbers in found]


@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens"), [(24, 8), (32, 12), (40, 16)])
@pytest.mark.parametrize(
    "query",
    [
        "how does aspirin lower fever prostaglandin hypothalamus",
        "aspirin blood heart attacks strokes",
        "Reye's syndrome children viral infections",
        "paracetamol fever liver",
    ],
)
def test_overlapping_chunks_give_each_stretch_once_with_true_citations(
    encoder: Bm25Encoder, minilm: HFTokenizer, query: str, chunk_tokens: int, overlap_tokens: int
) -> None:
    chunks = chunked(minilm, chunk_tokens, overlap_tokens)
    passages = [(number, chunk.text) for number, chunk in enumerate(chunks, start=1)]

    answer = extractive_answer(query, passages, encoder, max_sentences=7)

    sentences = cited_sentences(answer)
    assert sentences
    texts = [text for text, _ in sentences]
    for text, numbers in sentences:
        assert not any(text in other for other in texts if other != text)  # no repeats
        start = DOCUMENT.find(text)
        assert start >= 0
        end = start + len(text)
        spans = [(chunks[n - 1].start_char, chunks[n - 1].end_char) for n in numbers]
        # Each cited passage holds part of the sentence, and together they hold all of it.
        assert all(s < end and start < e for s, e in spans)
        covered = start
        for s, e in sorted(spans):
            assert s <= covered
            covered = max(covered, e)
        assert covered >= end


def test_the_repeat_of_a_chunk_overlap_is_left_out(
    encoder: Bm25Encoder, minilm: HFTokenizer
) -> None:
    chunks = chunked(minilm, 32, 12)
    passages = [(number, chunk.text) for number, chunk in enumerate(chunks, start=1)]

    answer = extractive_answer(
        "how does aspirin lower fever prostaglandin hypothalamus", passages, encoder
    )

    assert answer.startswith(
        "Aspirin lowers fever by blocking prostaglandin synthesis in the hypothalamus, which "
        "resets the body's thermostat ["
    )
    assert answer.count("Aspirin lowers fever by blocking") == 1
    assert answer.count("prostaglandin") == 1


def test_a_cut_copy_gives_way_to_a_whole_copy_in_a_lower_ranked_passage(
    encoder: Bm25Encoder,
) -> None:
    passages = [
        (1, "Aspirin is old. Aspirin lowers fever by blocking prostaglandin syn"),
        (2, "Aspirin lowers fever by blocking prostaglandin synthesis. It is cheap."),
    ]

    answer = extractive_answer("aspirin fever prostaglandin", passages, encoder, max_sentences=2)

    assert answer == (
        "Aspirin lowers fever by blocking prostaglandin synthesis [2]. Aspirin is old [1]."
    )


def test_two_cut_halves_are_joined_and_cite_both_passages(encoder: Bm25Encoder) -> None:
    passages = [
        (3, "ocks prostaglandin synthesis in the hypothalamus of the brain."),
        (1, "Aspirin is old. Aspirin lowers fever because it blocks prostaglandin synth"),
    ]

    answer = extractive_answer("fever prostaglandin", passages, encoder, max_sentences=1)

    assert answer == (
        "Aspirin lowers fever because it blocks prostaglandin synthesis in the hypothalamus "
        "of the brain [1, 3]."
    )


def test_edges_sharing_only_a_few_characters_are_not_joined(encoder: Bm25Encoder) -> None:
    passages = [
        (1, "Aspirin is old. Aspirin lowers fever in the"),
        (2, "in the morning the ward is quiet. Aspirin is cheap."),
    ]

    answer = extractive_answer("aspirin fever morning", passages, encoder, max_sentences=4)

    assert "Aspirin lowers fever in the [1]" in answer
    assert "in the morning the ward is quiet [2]." in answer


def test_the_same_sentence_in_two_documents_is_used_once(encoder: Bm25Encoder) -> None:
    passages = [
        (1, "Aspirin is a salicylate. Aspirin lowers fever."),
        (2, "Willow bark was chewed for pain. Aspirin lowers fever."),
    ]

    answer = extractive_answer("aspirin fever", passages, encoder)

    assert answer.count("Aspirin lowers fever") == 1
    assert "Aspirin lowers fever [1]." in answer
