"""The settings a reindex command hands to the Edge server that runs its step.

The command's environment describes the configuration the servers will run after the switch;
of it, only what shapes the new generation travels to the owner: the embedder, BM25 and the
index options (:data:`JOB_FIELDS`). Everything else the step needs (the data directory,
Redis and its namespace) is the running server's own, so a command run from another shell
cannot point the server at another directory or another Redis.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from groundwire.clients.errors import InvalidArgumentError
from groundwire.server.settings import EmbedderKind, Settings, SettingsError, load_settings

#: Where a step says what it does, one line at a time (print, or the owner's stream).
Say = Callable[[str], None]

JOB_FIELDS = (
    "embedder",
    "embeddings_base_url",
    "embeddings_api_key",
    "embeddings_model",
    "embeddings_dimension",
    "embeddings_timeout_s",
    "embed_batch_size",
    "embed_threads",
    "embed_query_threads",
    "retry_after_cap_s",
    "bm25_avg_len",
    "edge_hnsw",
)

# Inside a serving process a local model re-embeds on one thread unless the command names
# more: the other cores stay with the calls being served (queries and their own embedder).
JOB_EMBED_THREADS = 1


def encode(settings: Settings) -> dict[str, str]:
    """The command's job fields, each JSON-encoded (a request's ``settings`` map)."""
    values = settings.model_dump(mode="json", include=set(JOB_FIELDS))
    return {name: json.dumps(value) for name, value in values.items()}


def decode(own: Settings, received: Mapping[str, str]) -> Settings:
    """The server's settings with the command's job fields in place of its own.

    Raises InvalidArgumentError (field ``settings``) for a name outside JOB_FIELDS, a value
    that is not JSON, or values the settings refuse.
    """
    unknown = sorted(set(received) - set(JOB_FIELDS))
    if unknown:
        raise InvalidArgumentError.of(
            "settings", f"not taken from a reindex command: {', '.join(unknown)}"
        )
    try:
        values = {name: json.loads(value) for name, value in received.items()}
    except ValueError:
        raise InvalidArgumentError.of("settings", "every value must be JSON") from None
    try:
        parsed = load_settings(read_environment=False, data_dir=own.data_dir, **values)
    except SettingsError as exc:
        raise InvalidArgumentError.of("settings", str(exc)) from None
    update = {name: getattr(parsed, name) for name in JOB_FIELDS}
    if parsed.embed_threads is None:
        update["embed_threads"] = JOB_EMBED_THREADS
    return own.model_copy(update=update)


def same_embedder(one: Settings, other: Settings) -> bool:
    """Whether the two settings name the same dense embedder (then a running server's own
    loaded model serves the step, with its queries first)."""
    if one.embedder is not other.embedder:
        return False
    if one.embedder is not EmbedderKind.OPENAI:
        return True
    return (one.embeddings_base_url, one.embeddings_model, one.embeddings_dimension) == (
        other.embeddings_base_url,
        other.embeddings_model,
        other.embeddings_dimension,
    )
