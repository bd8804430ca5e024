"""An LLM judge: a catalog model grades each generated answer against the reference answers.

The judge is called directly (not through groundwire), from the catalog this process's
``GROUNDWIRE_*`` variables describe (``GROUNDWIRE_LLM_BASE_URL`` / ``GROUNDWIRE_LLM_CATALOG``),
so the model being evaluated never grades itself through the server's routes. It answers
with one digit from 0 to 5; the score is that digit / 5.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from groundwire.clients.errors import LLMCallError
from groundwire.clients.llm import ChatMessage, ChatRequest, OpenAIChatClient
from groundwire.server.pipeline.generation.catalog import ModelSpec, load_catalog
from groundwire.server.settings import environment_secret, load_settings

MAX_GRADE = 5
_GRADE = re.compile(r"\b([0-5])\b")
SYSTEM_PROMPT = (
    "You grade answers to questions against reference answers. Judge what the answer says, "
    "not its wording, length or citation markers like [1]. Reply with a single digit from 0 "
    "to 5 and nothing else: 5 means the answer states what a reference states, 3 that it is "
    "partly right or incomplete, 0 that it is wrong, contradicts the references, or does not "
    "answer."
)


class JudgeUnavailableError(RuntimeError):
    """The judge model is not in the catalog, or has no endpoint; the message says why."""


@dataclass(frozen=True)
class Verdict:
    """One grading: the score (0 to 1; NaN when the reply held no grade), the reply, and
    its cost in micros (None when the upstream reported no usage)."""

    score: float
    reply: str
    cost_micros: int | None
    error: str | None = None


def judge_prompt(question: str, references: Sequence[str], answer: str) -> str:
    """The user message: the question, the accepted answers and the answer to grade."""
    accepted = "\n".join(f"- {ref}" for ref in references)
    return (
        f"Question: {question}\n\nReference answer(s):\n{accepted}\n\n"
        f"Answer to grade:\n{answer.strip() or '(no answer)'}\n\nGrade (0-5):"
    )


def parse_grade(reply: str) -> float:
    """The first digit 0-5 in the reply, over 5; NaN when there is none."""
    match = _GRADE.search(reply)
    return int(match.group(1)) / MAX_GRADE if match else math.nan


class AnswerJudge:
    """Grades answers with one catalog model over its own HTTP client."""

    def __init__(self, spec: ModelSpec, client: OpenAIChatClient) -> None:
        self.spec = spec
        self._client = client

    @property
    def name(self) -> str:
        """The catalog name of the judge model."""
        return self.spec.name

    async def grade(self, question: str, references: Sequence[str], answer: str) -> Verdict:
        """The judge's verdict on one answer; an upstream failure is a verdict with ``error``
        (the run goes on)."""
        request = ChatRequest(
            model=self.spec.upstream_model,
            messages=(
                ChatMessage("system", SYSTEM_PROMPT),
                ChatMessage("user", judge_prompt(question, references, answer)),
            ),
            temperature=0.0,
            max_tokens=8,
        )
        reply = ""
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        cached_tokens = 0
        try:
            async for chunk in self._client.stream(request):
                reply += chunk.text
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens
                    completion_tokens = chunk.usage.completion_tokens
                    cached_tokens = chunk.usage.cached_tokens or 0
        except LLMCallError as exc:
            return Verdict(math.nan, reply, None, error=exc.message)
        cost = None
        if prompt_tokens is not None and completion_tokens is not None:
            numerator = self.spec.cost_micros_numerator(
                prompt_tokens, completion_tokens, cached_tokens
            )
            cost = (numerator + 500_000) // 1_000_000  # half up, as the server rounds
        return Verdict(parse_grade(reply), reply.strip(), cost)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


def load_judge(name: str) -> AnswerJudge:
    """The judge ``name`` from the catalog the environment describes. Raises
    :class:`JudgeUnavailableError` (and ``SettingsError``/``CatalogError`` for bad settings)."""
    settings = load_settings()
    catalog = load_catalog(
        settings.llm_catalog,
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key,
        secret=environment_secret,
    )
    spec = catalog.models.get(name)
    if spec is None or spec.base_url is None:
        why = catalog.unavailable.get(name, "not in the catalog")
        known = ", ".join(sorted(catalog.models)) or "none (set GROUNDWIRE_LLM_BASE_URL)"
        raise JudgeUnavailableError(
            f"judge model {name!r} is not available: {why}; available: {known}"
        )
    client = OpenAIChatClient(
        spec.base_url,
        api_key=spec.api_key,
        system=spec.provider,
        connect_timeout_s=settings.llm_connect_timeout_s,
        idle_timeout_s=settings.llm_idle_timeout_s,
    )
    return AnswerJudge(spec, client)
