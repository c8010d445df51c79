"""Fixtures of the RAG tests: the real converted embedding model and a real llama.cpp embedder.

`model_cache` (tests/conftest.py) converts the bundled model once per session; loading it into
llama.cpp takes about 0.3 s, so one embedder is shared by the whole session as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.rag.embedder import LlamaEmbedder
from gateway.rag.embedding_model import ensure_default_embedding_gguf


@pytest.fixture(scope="session")
def embedding_gguf(model_cache: Path) -> Path:
    return ensure_default_embedding_gguf(model_cache)


@pytest.fixture(scope="session")
def embedder(embedding_gguf: Path) -> Iterator[LlamaEmbedder]:
    # One thread: on a shared 2-core machine all-core llama.cpp threads spin against other
    # processes (measured 1 s instead of 8 ms per text under load).
    with LlamaEmbedder(embedding_gguf, n_threads=1) as loaded:
        yield loaded
