"""The grounded prompt: numbered sources, the question, and an instruction to answer only
from the sources and cite them as ``[n]``; fitted to a model's window by dropping the
lowest-ranked sources.

Tokens are counted locally with a tokenizer that ships with the project (MiniLM's WordPiece)
plus a safety margin, since the upstream's own tokenizer cannot be fetched at run time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from groundwire.clients.chat import ChatMessage
from groundwire.clients.ports import Tokenizer
from groundwire.server.pipeline.generation.types import SourceInfo

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources the user gives you. "
    "Cite the source of every claim with its number in square brackets, like [1] or [2][3], "
    "right after the claim. If the sources do not contain the answer, say that they do not. "
    "Do not use outside knowledge. Be concise."
)
# Chat formats add a few tokens per message (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 8
# Another model's tokenizer may count more tokens than ours; leave room for the difference.
COUNT_MARGIN = 1.15


class TokenCounter:
    """Counts tokens with a local tokenizer, rounded up by a safety margin."""

    def __init__(self, tokenizer: Tokenizer, margin: float = COUNT_MARGIN) -> None:
        self._tokenizer = tokenizer
        self._margin = margin

    def count(self, text: str) -> int:
        """An upper estimate of the tokens ``text`` takes."""
        return math.ceil(len(self._tokenizer.token_spans(text)) * self._margin)


def render_source(source: SourceInfo) -> str:
    """One source as the prompt shows it."""
    title = f" {source.title}" if source.title else ""
    return f"[{source.number}]{title}\n{source.text.strip()}"


def render_user(query: str, sources: Sequence[SourceInfo]) -> str:
    """The user message: the sources, then the question."""
    parts = ["Sources:", *(render_source(s) for s in sources), f"Question: {query}"]
    return "\n\n".join(parts)


@dataclass(frozen=True)
class Prompt:
    """The messages for one model and the sources they hold (a prefix of the ranked list)."""

    messages: tuple[ChatMessage, ...]
    sources: tuple[SourceInfo, ...]

    def continued(self, partial_answer: str) -> Prompt:
        """The same prompt with the answer so far as an assistant prefix to continue from."""
        return Prompt((*self.messages, ChatMessage("assistant", partial_answer)), self.sources)


class PromptBuilder:
    """Builds the grounded prompt for a question and its ranked sources."""

    def __init__(self, counter: TokenCounter) -> None:
        self.counter = counter

    def tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Our estimate of the tokens ``messages`` take upstream."""
        return sum(self.counter.count(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)

    def fits(self, messages: Sequence[ChatMessage], *, window: int, max_output_tokens: int) -> bool:
        """Whether ``messages`` and an answer of ``max_output_tokens`` fit ``window``."""
        budget = window - max_output_tokens
        # A byte-level tokenizer never makes more tokens than UTF-8 bytes: when the bytes fit,
        # counting (about 0.1 ms per source) is not needed.
        if _bytes(m.content for m in messages) + MESSAGE_OVERHEAD_TOKENS * len(messages) <= budget:
            return True
        return self.tokens(messages) <= budget

    def build(
        self, query: str, sources: Sequence[SourceInfo], *, window: int, max_output_tokens: int
    ) -> Prompt | None:
        """The prompt with as many of the top sources as fit ``window`` alongside
        ``max_output_tokens`` of answer; None when not even the best source fits."""
        whole = _prompt(query, sources)
        if self.fits(whole.messages, window=window, max_output_tokens=max_output_tokens):
            return whole
        budget = window - max_output_tokens
        used = self.tokens(_prompt(query, ()).messages)
        kept = 0
        for source in sources:
            used += self.counter.count(render_source(source)) + 1
            if used > budget:
                break
            kept += 1
        if kept == 0:
            return None
        return _prompt(query, sources[:kept])


def _prompt(query: str, sources: Sequence[SourceInfo]) -> Prompt:
    return Prompt(
        messages=(
            ChatMessage("system", SYSTEM_PROMPT),
            ChatMessage("user", render_user(query, sources)),
        ),
        sources=tuple(sources),
    )


def _bytes(texts: Iterable[str]) -> int:
    return sum(len(t.encode("utf-8")) for t in texts)
