"""Ranking and answer metrics, by their standard definitions.

Ranking metrics take a ranked list of document ids and the query's graded judgements
(``{doc id: grade}``; a grade above 0 is relevant):

- nDCG@k as trec_eval's ``ndcg_cut_k`` (BEIR's figure): linear gains, ``log2(rank + 1)``
  discount, the ideal ranking built from the query's own grades and cut at k;
- Recall@k: the share of the relevant documents in the first k (trec_eval's ``recall_k``);
- MRR@k: 1 / the rank of the first relevant document within the first k, else 0.

A query with no relevant document scores 0 on each, as in trec_eval.

Answer metrics follow SQuAD: lower case, punctuation and the articles a/an/the removed,
white space collapsed; exact match and token F1 take the best over the accepted answers.
Citation markers (``[1]``, ``[2, 3]``) are removed from a generated answer first: they are
not part of what it says.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from groundwire.tools.measure.stats import mean

RANKING_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_CITATION = re.compile(r"\[\s*\d+(?:\s*,\s*\d+)*\s*\]")


def _dcg(gains: Iterable[float]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def ndcg_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """Graded nDCG@k (trec_eval ``ndcg_cut_k``); negative grades count as 0."""
    gains = [max(relevance.get(doc_id, 0), 0) for doc_id in ranking[:k]]
    ideal = _dcg(sorted((g for g in relevance.values() if g > 0), reverse=True)[:k])
    return _dcg(gains) / ideal if ideal > 0 else 0.0


def recall_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents (grade > 0) among the first ``k``."""
    relevant = {doc_id for doc_id, grade in relevance.items() if grade > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document within the first ``k``, else 0."""
    for rank, doc_id in enumerate(ranking[:k], start=1):
        if relevance.get(doc_id, 0) > 0:
            return 1.0 / rank
    return 0.0


def ranking_metrics(ranking: Sequence[str], relevance: Mapping[str, int]) -> dict[str, float]:
    """The four reported metrics of one query (:data:`RANKING_METRICS`)."""
    return {
        "ndcg@10": ndcg_at_k(ranking, relevance, 10),
        "recall@10": recall_at_k(ranking, relevance, 10),
        "recall@100": recall_at_k(ranking, relevance, 100),
        "mrr@10": mrr_at_k(ranking, relevance, 10),
    }


def mean_metrics(
    runs: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    """The mean of each metric over every judged query; a query with no ranking scores 0."""
    per_query = [ranking_metrics(runs.get(q, []), relevance) for q, relevance in qrels.items()]
    return {name: mean([m[name] for m in per_query]) for name in RANKING_METRICS}


def documents_in_rank_order(chunk_doc_ids: Sequence[str]) -> list[str]:
    """Chunk hits, best first, as a document ranking: a document ranks at its best chunk."""
    return list(dict.fromkeys(chunk_doc_ids))


def strip_citations(text: str) -> str:
    """The answer without its ``[n]`` / ``[n, m]`` citation markers."""
    return _CITATION.sub(" ", text)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised reference, else 0.0."""
    predicted = normalize_answer(strip_citations(prediction))
    return float(any(predicted == normalize_answer(ref) for ref in references))


def _f1(predicted: list[str], reference: list[str]) -> float:
    if not predicted or not reference:
        # SQuAD v2: two empty answers agree; one empty answer shares nothing.
        return float(predicted == reference)
    common = sum((Counter(predicted) & Counter(reference)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted)
    recall = common / len(reference)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """The best token-overlap F1 of the prediction against any reference."""
    predicted = normalize_answer(strip_citations(prediction)).split()
    return max((_f1(predicted, normalize_answer(ref).split()) for ref in references), default=0.0)
