"""Answer quality through the API: ``Generate`` for each reference question, the streamed
answer scored against the reference answers.

Per answer: the text, route, model, finish reason, usage, cost, time to first token (measured
here to the first delta, and as the server reports it), exact match and token F1; with gold
document ids also source recall (the share of gold documents among the sources) and citation
precision (the share of cited sources that are gold documents); with a judge, its grade and
what the grading cost. Every call bypasses the answer cache.

A call that fails before its start frame (unauthenticated, bad request, server down) stops
the evaluation; a failure after it (the upstream broke off mid-answer) is recorded with the
answer and the rest proceed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from groundwire.sdk import tier as tier_value
from groundwire.tools.evaluation.beir import ReferenceAnswer
from groundwire.tools.evaluation.judge import AnswerJudge
from groundwire.tools.evaluation.metrics import exact_match, token_f1
from groundwire.tools.measure.progress import Progress, progress_bar
from groundwire.tools.measure.stats import latency_summary_ms, mean
from groundwire.tools.measure.target import Metadata
from groundwire.v1 import generation_pb2, generation_pb2_grpc, retrieval_pb2

GENERATE_TIMEOUT_S = 300.0
ANSWER_SCORES = (
    "exact_match",
    "token_f1",
    "source_recall",
    "citation_precision",
    "judge_score",
)


@dataclass
class AnswerRecord:
    """One question's answer, how it was served and how it scores (NaN: not applicable)."""

    question_id: str
    question: str
    references: list[str]
    gold_doc_ids: list[str]
    answer: str = ""
    route: str = ""
    model: str = ""
    finish_reason: str = ""
    attempts: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    cost_micros: int = 0
    currency: str = ""
    ttft_client_ms: float = math.nan
    ttft_server_ms: float = math.nan
    upstream_ttft_ms: float = math.nan
    total_client_ms: float = math.nan
    total_server_ms: float = math.nan
    source_doc_ids: list[str] = field(default_factory=list)
    cited: list[int] = field(default_factory=list)
    exact_match: float = math.nan
    token_f1: float = math.nan
    source_recall: float = math.nan
    citation_precision: float = math.nan
    judge_score: float = math.nan
    judge_reply: str = ""
    judge_cost_micros: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()


def _ms(duration: Any) -> float:
    return float(duration.ToNanoseconds()) / 1e6


def build_request(
    question: str, *, tier: str | None, model: str | None
) -> generation_pb2.GenerateRequest:
    """Generate with the server's default retrieval, the given tier or model, no cache."""
    request = generation_pb2.GenerateRequest(
        query=question, retrieval=retrieval_pb2.RetrieveRequest(), bypass_cache=True
    )
    if tier:
        request.tier = tier_value(tier)
    if model:
        request.model = model
    return request


def score_answer(record: AnswerRecord, sources: Mapping[int, str]) -> None:
    """Fill in the record's scores from its answer text, citations and ``sources`` (source
    number → doc id)."""
    record.exact_match = exact_match(record.answer, record.references)
    record.token_f1 = token_f1(record.answer, record.references)
    gold = set(record.gold_doc_ids)
    if gold:
        record.source_recall = len(gold.intersection(record.source_doc_ids)) / len(gold)
        cited = sorted(set(record.cited))
        if cited:
            record.citation_precision = sum(1 for n in cited if sources.get(n) in gold) / len(cited)


async def answer_one(
    stub: generation_pb2_grpc.GenerationServiceStub,
    metadata: Metadata,
    reference: ReferenceAnswer,
    *,
    tier: str | None,
    model: str | None,
) -> AnswerRecord:
    """Stream one answer and score it."""
    record = AnswerRecord(
        question_id=reference.question_id,
        question=reference.question,
        references=list(reference.answers),
        gold_doc_ids=list(reference.doc_ids),
    )
    sources: dict[int, str] = {}
    pieces: list[str] = []
    started = time.perf_counter()
    call = stub.Generate(
        build_request(reference.question, tier=tier, model=model),
        metadata=metadata,
        timeout=GENERATE_TIMEOUT_S,
    )
    got_start = False
    try:
        async for frame in call:  # type: ignore[attr-defined]
            kind = frame.WhichOneof("frame")
            if kind == "start":
                got_start = True
                start = frame.start
                record.route = _enum_name(generation_pb2.Route, start.route, "ROUTE_")
                record.model = start.model
                sources = {s.number: s.doc_id for s in start.sources}
                record.source_doc_ids = list(dict.fromkeys(s.doc_id for s in start.sources))
            elif kind == "delta":
                if not pieces:
                    record.ttft_client_ms = (time.perf_counter() - started) * 1000.0
                pieces.append(frame.delta.text)
            elif kind == "citation":
                record.cited.append(frame.citation.number)
            elif kind == "end":
                _read_end(record, frame.end)
    except grpc.aio.AioRpcError as error:
        if not got_start:
            raise
        record.error = f"{error.code().name}: {error.details()}"
    record.total_client_ms = (time.perf_counter() - started) * 1000.0
    record.answer = "".join(pieces)
    score_answer(record, sources)
    return record


def _read_end(record: AnswerRecord, end: generation_pb2.EndFrame) -> None:
    record.finish_reason = _enum_name(
        generation_pb2.FinishReason, end.finish_reason, "FINISH_REASON_"
    )
    record.attempts = end.attempts
    usage = end.usage
    record.prompt_tokens = usage.prompt_tokens if usage.HasField("prompt_tokens") else None
    record.completion_tokens = (
        usage.completion_tokens if usage.HasField("completion_tokens") else None
    )
    record.cached_tokens = usage.cached_tokens if usage.HasField("cached_tokens") else None
    record.cost_micros = end.cost.micros
    record.currency = end.cost.currency
    record.ttft_server_ms = _ms(end.timings.first_token)
    record.upstream_ttft_ms = _ms(end.timings.upstream_first_token)
    record.total_server_ms = _ms(end.timings.total)


async def answer_all(
    channel: grpc.aio.Channel,
    metadata: Metadata,
    references: Sequence[ReferenceAnswer],
    *,
    tier: str | None,
    model: str | None,
    judge: AnswerJudge | None,
    concurrency: int,
    progress: Progress,
) -> list[AnswerRecord]:
    """Answer (and grade) every question, ``concurrency`` at a time; records in input order."""
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    records: list[AnswerRecord | None] = [None] * len(references)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(references)):
        queue.put_nowait(index)

    with progress_bar(len(references), "answers", "answer", enabled=progress) as bar:

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                reference = references[index]
                record = await answer_one(stub, metadata, reference, tier=tier, model=model)
                if judge is not None:
                    verdict = await judge.grade(
                        reference.question, reference.answers, record.answer
                    )
                    record.judge_score = verdict.score
                    record.judge_reply = verdict.error or verdict.reply
                    record.judge_cost_micros = verdict.cost_micros
                records[index] = record
                bar.update(1)

        workers = max(1, min(concurrency, len(references)))
        await asyncio.gather(*(worker() for _ in range(workers)))
    return [r for r in records if r is not None]


def _finite_mean(values: Sequence[float]) -> float:
    return mean([v for v in values if not math.isnan(v)])


def summarize_answers(records: Sequence[AnswerRecord]) -> dict[str, Any]:
    """Means of the scores (each over the answers it applies to), routes and finish reasons,
    cost, and time-to-first-token summaries."""
    currencies = {r.currency for r in records if r.currency}
    judged = [r.judge_cost_micros for r in records if r.judge_cost_micros is not None]
    return {
        "answers": len(records),
        "scores": {
            name: _finite_mean([getattr(r, name) for r in records]) for name in ANSWER_SCORES
        },
        "scored": {
            name: sum(1 for r in records if not math.isnan(getattr(r, name)))
            for name in ANSWER_SCORES
        },
        "routes": dict(Counter(r.route for r in records)),
        "finish_reasons": dict(Counter(r.finish_reason for r in records)),
        "errors": sum(1 for r in records if r.error),
        "cost_micros_total": sum(r.cost_micros for r in records),
        "cost_micros_mean": mean([float(r.cost_micros) for r in records]),
        "currency": ",".join(sorted(currencies)) or "USD",
        "judge_cost_micros_total": sum(judged) if judged else None,
        "ttft_client": latency_summary_ms(
            [r.ttft_client_ms / 1000.0 for r in records if not math.isnan(r.ttft_client_ms)]
        ),
        "ttft_server": latency_summary_ms(
            [r.ttft_server_ms / 1000.0 for r in records if not math.isnan(r.ttft_server_ms)]
        ),
        "total_client": latency_summary_ms(
            [r.total_client_ms / 1000.0 for r in records if not math.isnan(r.total_client_ms)]
        ),
    }
