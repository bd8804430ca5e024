"""What a chat model is asked and what it streams back, in our terms.

The :class:`~groundwire.clients.ports.ChatModel` port speaks these types, so the pipeline
builds prompts and reads answers without knowing which client (or protocol) serves them;
``llm.py`` turns them into OpenAI's wire format and back.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat prompt."""

    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """A chat completion request, in the upstream's terms."""

    model: str  # the upstream model name
    messages: tuple[ChatMessage, ...]
    temperature: float
    max_tokens: int
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenUsage:
    """Token counts as the upstream reported them (None: not reported)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass
class ChatChunk:
    """New output of a streaming call. ``pieces`` counts the upstream's content events merged
    into ``text`` (roughly its tokens, used when no usage is reported)."""

    text: str = ""
    pieces: int = 0
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    model: str | None = None

    def merge(self, other: ChatChunk) -> None:
        """Append ``other`` (a later chunk) to this one."""
        self.text += other.text
        self.pieces += other.pieces
        self.finish_reason = other.finish_reason or self.finish_reason
        self.usage = other.usage or self.usage
        self.model = self.model or other.model
