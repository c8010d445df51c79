"""Sentence embeddings with llama.cpp, for indexing chunks and for questions.

One `Llama` object is not thread-safe, so calls are serialised with a lock: the gateway embeds from
one thread anyway, and the lock turns a misuse into waiting instead of memory corruption.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gateway.errors import ModelNotFound
from gateway.logging import get_logger
from gateway.rag.embedding_model import embedding_model_identity, model_context_length
from gateway.rag.errors import EmbeddingModelError

log = get_logger(__name__)

_MAX_CONTEXT = 512  # BERT-family position tables; longer contexts only cost memory here
_DEFAULT_CONTEXT = 512  # when the GGUF does not say


class LlamaEmbedder:
    """Turns texts into L2-normalised vectors; texts longer than the context are truncated.

    Truncation is explicit (tokenize, cut, keep the closing separator, detokenize) because
    llama-cpp-python either raises on long inputs or drops the final [SEP] token, which shifts
    the mean-pooled vector of every long chunk.
    """

    def __init__(self, model_path: Path, *, n_threads: int = 0) -> None:
        import llama_cpp

        from gateway.llama_backends import ensure_cpu_backend

        if not model_path.is_file():
            raise ModelNotFound(f"embedding model {model_path} does not exist")
        self._path = model_path
        self._identity = embedding_model_identity(model_path)
        threads = n_threads or os.cpu_count() or 1
        train_ctx = model_context_length(model_path)
        try:
            ensure_cpu_backend()
            n_ctx = max(32, min(train_ctx or _DEFAULT_CONTEXT, _MAX_CONTEXT))
            self._llm: Any = llama_cpp.Llama(
                model_path=str(model_path),
                embedding=True,
                n_ctx=n_ctx,
                n_batch=n_ctx,
                n_ubatch=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise EmbeddingModelError(
                f"llama.cpp cannot load embedding model {model_path}: {exc}", path=model_path
            ) from exc
        self._n_ctx = n_ctx
        self._dim = int(self._llm.n_embd())
        self._lock = threading.Lock()
        self._closed = False
        log.info(
            "embedding.loaded",
            path=str(model_path),
            dim=self._dim,
            n_ctx=n_ctx,
            threads=threads,
            identity=self._identity,
        )

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def max_tokens(self) -> int:
        """Tokens per text, separators included; longer texts are cut to this."""
        return self._n_ctx

    def count_tokens(self, text: str) -> int:
        """Token count of `text` including the [CLS]/[SEP] the model adds."""
        with self._lock:
            self._check_open()
            return len(self._llm.tokenize(_utf8(text), add_bos=True, special=False))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        if not texts:
            return []
        with self._lock:
            self._check_open()
            raw: list[list[float]] = []
            try:
                # One sequence per decode: llama.cpp attends over the whole batch on CPU, so
                # packing 8 chunks into one batch measured 1.6x slower than one at a time.
                for text in texts:
                    raw.append(self._llm.embed(self._fit(text), normalize=False, truncate=False))
            except (ValueError, RuntimeError) as exc:
                raise EmbeddingModelError(f"embedding failed: {exc}", path=self._path) from exc
        matrix = np.asarray(raw, dtype=np.float64)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0.0] = 1.0
        return (matrix / norms).tolist()  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._llm.close()

    def __enter__(self) -> LlamaEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise EmbeddingModelError("the embedder is closed", path=self._path)

    def _fit(self, text: str) -> str:
        """`text` cut so that its tokens, separators included, fit in the context."""
        data = _utf8(text)
        tokens: list[int] = self._llm.tokenize(data, add_bos=True, special=False)
        if len(tokens) <= self._n_ctx:
            return data.decode("utf-8")
        # Drop [CLS] and the content past the budget; detokenizing may re-tokenize a little
        # longer (joined word pieces), so shrink until it fits.
        budget = self._n_ctx - 2
        while budget > 0:
            body = tokens[1 : 1 + budget]
            candidate: bytes = self._llm.detokenize(body)
            n = len(self._llm.tokenize(candidate, add_bos=True, special=False))
            if n <= self._n_ctx:
                return candidate.decode("utf-8", errors="replace")
            budget -= max(1, n - self._n_ctx)
        return ""


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of `text`; lone surrogates (possible from JSON) become U+FFFD, NULs spaces."""
    return text.replace("\x00", " ").encode("utf-8", errors="replace")
