"""An LLM judge: a model the server lists grades each generated answer against the reference
answers.

The judge is called directly (not through groundwire), so the model being evaluated never
grades itself through the server's routes. Which models exist, their upstream names and
prices come from the server's ``GetCapabilities``; where to call them is the command's own
setting: ``--judge-base-url`` (default ``$GROUNDWIRE_LLM_BASE_URL``, the endpoint a server
configured by the same environment uses) and ``--judge-api-key`` (default
``$GROUNDWIRE_LLM_API_KEY``). It answers with one digit from 0 to 5; the score is that
digit / 5.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from groundwire.clients.chat import ChatMessage, ChatRequest
from groundwire.clients.errors import LLMCallError
from groundwire.clients.llm import OpenAIChatClient
from groundwire.v1 import capabilities_pb2

BASE_URL_VARIABLE = "GROUNDWIRE_LLM_BASE_URL"
API_KEY_VARIABLE = "GROUNDWIRE_LLM_API_KEY"
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
    """The judge model has no endpoint, or the server lists no such model; the message says
    why."""


@dataclass(frozen=True)
class JudgeModel:
    """A model as ``GetCapabilities`` lists it: the name, what is sent upstream, the prices."""

    name: str
    upstream_model: str
    input_micros_per_million: int
    output_micros_per_million: int
    currency: str

    def cost_micros(self, prompt_tokens: int, completion_tokens: int) -> int:
        """The cost of one grading in micros, rounded half up as the server rounds. Cached
        prompt tokens are priced as input: the capabilities list no cached price."""
        numerator = (
            prompt_tokens * self.input_micros_per_million
            + completion_tokens * self.output_micros_per_million
        )
        return (numerator + 500_000) // 1_000_000


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

    def __init__(self, model: JudgeModel, client: OpenAIChatClient) -> None:
        self.model = model
        self._client = client

    @property
    def name(self) -> str:
        """The catalog name of the judge model."""
        return self.model.name

    async def grade(self, question: str, references: Sequence[str], answer: str) -> Verdict:
        """The judge's verdict on one answer; an upstream failure is a verdict with ``error``
        (the run goes on)."""
        request = ChatRequest(
            model=self.model.upstream_model,
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
        try:
            async for chunk in self._client.stream(request):
                reply += chunk.text
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens
                    completion_tokens = chunk.usage.completion_tokens
        except LLMCallError as exc:
            return Verdict(math.nan, reply, None, error=exc.message)
        cost = None
        if prompt_tokens is not None and completion_tokens is not None:
            cost = self.model.cost_micros(prompt_tokens, completion_tokens)
        return Verdict(parse_grade(reply), reply.strip(), cost)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


def judge_endpoint(name: str, base_url: str | None) -> str:
    """The judge's base URL; :class:`JudgeUnavailableError` when there is none (checked
    before any server starts)."""
    if not base_url:
        raise JudgeUnavailableError(
            f"judge model {name!r} is not available: no endpoint to call it at "
            f"(--judge-base-url, or set {BASE_URL_VARIABLE})"
        )
    return base_url


def load_judge(
    name: str,
    capabilities: capabilities_pb2.GetCapabilitiesResponse,
    *,
    base_url: str | None,
    api_key: str | None = None,
) -> AnswerJudge:
    """The judge ``name`` as the server lists it, called at ``base_url``. Raises
    :class:`JudgeUnavailableError` when there is no endpoint or no such model."""
    endpoint = judge_endpoint(name, base_url)
    listed = {m.name: m for m in capabilities.models}
    info = listed.get(name)
    if info is None:
        known = ", ".join(sorted(listed)) or "none (the server has no LLM configured)"
        raise JudgeUnavailableError(
            f"judge model {name!r} is not available: the server lists no such model; "
            f"available: {known}"
        )
    model = JudgeModel(
        info.name,
        info.upstream_model,
        info.input_micros_per_million,
        info.output_micros_per_million,
        info.currency,
    )
    return AnswerJudge(model, OpenAIChatClient(endpoint, api_key=api_key))


def default_base_url() -> str | None:
    """``$GROUNDWIRE_LLM_BASE_URL``: the endpoint a server of this environment calls."""
    return os.environ.get(BASE_URL_VARIABLE) or None


def default_api_key() -> str | None:
    """``$GROUNDWIRE_LLM_API_KEY``."""
    return os.environ.get(API_KEY_VARIABLE) or None
