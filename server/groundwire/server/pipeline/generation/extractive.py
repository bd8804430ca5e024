"""The degraded answer when no LLM can answer: the passages' most relevant sentences, cited.

Sentences are scored by the query terms they contain, with the sparse encoder's document
weights as term frequency and an IDF computed over the candidate sentences themselves (a term
found in every candidate tells them apart no better than none). Deterministic and pure.

Passages are often adjacent chunks of one document that share their overlap (chunking repeats
the last tokens of a chunk at the start of the next), and a chunk's edges cut sentences. So a
sentence is a candidate once: exact repeats (also across documents) keep the best-ranked copy,
a cut copy at a passage's edge gives way to a whole copy elsewhere, and two cut halves that
overlap are joined into the whole sentence, cited with both passages (each cited passage holds
part of it, so every citation stays true).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from groundwire.clients.ports import SparseEncoder

ELLIPSIS = "…"

# A sentence may end where a run of terminal punctuation, perhaps closed by quotes or
# brackets, meets whitespace. Decimals ("3.5") and "e.g.," never meet whitespace.
_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")
# Hard breaks regardless of punctuation: a blank line, or a line starting a list item. A single
# newline is only wrapping (text extracted from PDFs is hard-wrapped mid-sentence).
_HARD_BREAK = re.compile(r"\n[ \t]*\n\s*|\n(?=[ \t]*(?:[-*•‣]|\d{1,3}[.)])[ \t])")
_LIST_BULLET = re.compile(r"^(?:[-*•‣]|\d{1,3}[.)])\s+")
_WORD_OPENERS = "([{\"'\u201c\u2018"
_INITIALISM = re.compile(r"(?:[a-z]\.)+[a-z]")  # "u.s", "e.g", "i.e" (before the last ".")
# Abbreviations a period never ends a sentence after ("al" is "et al.").
_ABBREVIATIONS = frozenset(
    {"e.g", "i.e", "al", "cf", "vs", "dr", "mr", "mrs", "ms", "prof", "st", "jr", "sr"}
    | {"fig", "figs", "eq", "eqs", "approx", "ca", "resp", "dept", "est"}
)
# Abbreviations only when a number follows: "No. 5" but "the answer is no. Then".
_NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "vol", "p", "pp", "ch", "sec", "art", "ref"})
# Reference markers inside the passages (Wikipedia's "[12]") would read as our own citations.
_REFERENCE_MARKER = re.compile(r"\s*\[\d{1,4}(?:\s*,\s*\d{1,4})*\]")
_TRAILING_TERMINATORS = re.compile(r"[.!?]+$")
# The shortest shared stretch that joins two cut halves of one sentence: chunk overlaps are
# tens of tokens (hundreds of characters), a chance match between unrelated texts is short.
MIN_JOIN_CHARS = 24


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` in order, whitespace collapsed to single spaces.

    Blank lines and list items always start a new sentence; a single newline does not. A
    period after a common abbreviation ("e.g.", "i.e.", "et al.", "Fig.", "Dr."), an initial
    ("J. Smith") or before a lowercase word does not end a sentence; decimals never do.
    Fragments without a letter or digit are dropped.
    """
    sentences: list[str] = []
    for block in _HARD_BREAK.split(text):
        flat = _LIST_BULLET.sub("", " ".join(block.split()))
        start = 0
        for match in _BOUNDARY.finditer(flat):
            if _ends_sentence(flat, match):
                _append(sentences, flat[start : match.end()])
                start = match.end() + 1  # the single space after it
        _append(sentences, flat[start:])
    return sentences


def _ends_sentence(flat: str, match: re.Match[str]) -> bool:
    next_char = flat[match.end() + 1 : match.end() + 2]
    if next_char.islower():
        return False
    if flat[match.start()] != "." or flat[match.start() + 1 : match.start() + 2] == ".":
        return True  # "?", "!" and ellipses are not abbreviations
    word = flat[flat.rfind(" ", 0, match.start()) + 1 : match.start()].lstrip(_WORD_OPENERS)
    lowered = word.lower()
    if lowered in _ABBREVIATIONS or _INITIALISM.fullmatch(lowered):
        return False
    if lowered in _NUMBER_ABBREVIATIONS and next_char.isdigit():
        return False
    return not (len(word) == 1 and word.isupper())  # an initial: "J. Smith"


def _append(sentences: list[str], candidate: str) -> None:
    sentence = candidate.strip()
    if any(char.isalnum() for char in sentence):
        sentences.append(sentence)


@dataclass(frozen=True)
class _Candidate:
    rank: int  # the (best) passage's position in ``passages``
    index: int  # the sentence's position in that passage
    numbers: tuple[int, ...]  # the source numbers cited: one, or more for a joined sentence
    text: str
    first: bool = False  # the passage's first sentence: a chunk may have cut its start
    last: bool = False  # the passage's last sentence: a chunk may have cut its end


def extractive_answer(
    query: str,
    passages: Sequence[tuple[int, str]],
    scorer: SparseEncoder,
    *,
    max_sentences: int = 3,
    max_sentence_chars: int = 400,
) -> str:
    """The best ``max_sentences`` sentences of ``passages`` for ``query``, best first, each
    cited with its passage's number before its final punctuation: ``"Aspirin lowers fever
    [2]. It also eases pain [1]."``

    ``passages`` are (source number, text) in rank order; ties go to the higher-ranked
    passage, then the earlier sentence. A sentence repeated in several passages (overlapping
    chunks, or the same text in two documents) is a candidate once, from its best-ranked
    passage; a sentence cut at a passage's edge is left out when another passage holds it
    whole, and joined with its other half (citing both) when each holds a cut half. When no
    sentence shares a term
    with the query, the answer is the first sentence of the first passage that has one. ""
    when there are no sentences. Raise ValueError unless both limits are at least 1.
    """
    if max_sentences < 1:
        raise ValueError(f"max_sentences must be at least 1, got {max_sentences}")
    if max_sentence_chars < 1:
        raise ValueError(f"max_sentence_chars must be at least 1, got {max_sentence_chars}")
    candidates = _candidates(passages)
    if not candidates:
        return ""
    scores = _scores(query, candidates, scorer)
    ranked = sorted(
        (
            (score, candidate)
            for score, candidate in zip(scores, candidates, strict=True)
            if score > 0
        ),
        key=lambda pair: (-pair[0], pair[1].rank, pair[1].index),
    )
    chosen = [candidate for _, candidate in ranked[:max_sentences]] or [candidates[0]]
    return " ".join(_cited(candidate, max_sentence_chars) for candidate in chosen)


def _candidates(passages: Sequence[tuple[int, str]]) -> list[_Candidate]:
    sentences: list[_Candidate] = []
    for rank, (number, text) in enumerate(passages):
        cleaned = [
            _REFERENCE_MARKER.sub("", sentence).strip() for sentence in split_sentences(text)
        ]
        kept = [sentence for sentence in cleaned if any(char.isalnum() for char in sentence)]
        sentences += [
            _Candidate(rank, index, (number,), sentence, index == 0, index == len(kept) - 1)
            for index, sentence in enumerate(kept)
        ]
    unique = _without_repeats(sentences)
    while True:  # a sentence longer than a chunk's stride is cut into three parts or more
        joined = _joined(unique)
        if len(joined) == len(unique):
            return _without_cut_copies(joined)
        unique = joined


def _without_repeats(sentences: list[_Candidate]) -> list[_Candidate]:
    """The first (best-ranked) copy of each sentence, compared without case."""
    seen: set[str] = set()
    unique: list[_Candidate] = []
    for sentence in sentences:
        key = sentence.text.casefold()
        if key not in seen:
            seen.add(key)
            unique.append(sentence)
    return unique


def _joined(sentences: list[_Candidate]) -> list[_Candidate]:
    """Each passage's cut last sentence joined with another passage's cut first sentence
    when the end of one is the start of the other (adjacent chunks' shared overlap); one join
    per sentence per pass."""
    heads = [position for position, sentence in enumerate(sentences) if sentence.last]
    tails = [position for position, sentence in enumerate(sentences) if sentence.first]
    joined: dict[int, _Candidate] = {}  # by the head's position
    used: set[int] = set()  # positions joined into another candidate, as head or tail
    for position in heads:
        head = sentences[position]
        for other in tails:
            tail = sentences[other]
            if tail.rank == head.rank or position in used or other in used:
                continue
            shared = _overlap(head.text, tail.text)
            if shared:
                best = head if head.rank < tail.rank else tail
                joined[position] = _Candidate(
                    best.rank,
                    best.index,
                    (*head.numbers, *tail.numbers),
                    head.text + tail.text[shared:],
                    head.first,
                    tail.last,
                )
                used.update((position, other))
    out = [
        joined.get(position, sentence)
        for position, sentence in enumerate(sentences)
        if position in joined or position not in used
    ]
    return sorted(out, key=lambda candidate: (candidate.rank, candidate.index))


def _overlap(head: str, tail: str) -> int:
    """How many characters at the end of ``head`` begin ``tail`` (at least
    ``MIN_JOIN_CHARS``, and neither holds the other whole); 0 when they do not join. Case
    counts: both are slices of one document."""
    probe = tail[:MIN_JOIN_CHARS]
    at = head.find(probe) if len(probe) == MIN_JOIN_CHARS else -1
    if at < 0 or tail in head or head in tail:
        return 0
    while at >= 0:
        if tail.startswith(head[at:]):
            return len(head) - at
        at = head.find(probe, at + 1)
    return 0


def _without_cut_copies(sentences: list[_Candidate]) -> list[_Candidate]:
    """Without the sentences at a passage's edge that another candidate holds whole."""
    folded = [sentence.text.casefold().replace("\0", " ") for sentence in sentences]
    # Repeats are gone, so an edge sentence found twice in all texts (kept apart by a
    # character none of them has) is also inside another one.
    everything = "\0".join(folded)
    return [
        sentence
        for sentence, text in zip(sentences, folded, strict=True)
        if not (sentence.first or sentence.last) or everything.count(text) < 2
    ]


def _scores(query: str, candidates: Sequence[_Candidate], scorer: SparseEncoder) -> list[float]:
    query_terms = set(scorer.encode_query(query).indices)
    vectors = scorer.encode_documents([candidate.text for candidate in candidates])
    weights = [
        {
            term: weight
            for term, weight in zip(vector.indices, vector.values, strict=True)
            if term in query_terms
        }
        for vector in vectors
    ]
    total = len(candidates)
    frequency: dict[int, int] = {}
    for sentence_weights in weights:
        for term in sentence_weights:
            frequency[term] = frequency.get(term, 0) + 1
    # BM25's IDF with the +1 inside the log: positive even for a term every sentence has.
    idf = {
        term: math.log(1.0 + (total - count + 0.5) / (count + 0.5))
        for term, count in frequency.items()
    }
    return [
        sum(idf[term] * weight for term, weight in sorted(sentence_weights.items()))
        for sentence_weights in weights
    ]


def _cited(candidate: _Candidate, max_chars: int) -> str:
    text = _shorten(candidate.text, max_chars)
    marker = f" [{', '.join(map(str, candidate.numbers))}]"
    terminators = _TRAILING_TERMINATORS.search(text)
    if terminators is None:
        return text + marker
    return text[: terminators.start()] + marker + terminators.group()


def _shorten(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    if space > 0:
        cut = cut[:space]
    return cut.rstrip(" ,;:-\u2013\u2014") + ELLIPSIS
