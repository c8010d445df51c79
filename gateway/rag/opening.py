"""Opening the knowledge base for the configured embedding model, and finding the models.

Shared by the running gateway, the kb commands and the tests, so all of them agree on which
embedding model (and so which vector size and identity) a knowledge-base file belongs to.
"""

from __future__ import annotations

from pathlib import Path

from gateway.bundled import default_generation_model
from gateway.config import Settings
from gateway.rag.embedding_model import (
    embedding_model_identity,
    read_gguf_scalars,
    resolve_embedding_model,
)
from gateway.rag.store import KnowledgeBase


def embedding_dim(path: Path) -> int:
    with path.open("rb") as fh:
        meta = read_gguf_scalars(fh)
    value = meta.get(f"{meta.get('general.architecture', '')}.embedding_length")
    if not isinstance(value, int):
        raise ValueError(f"{path} does not declare an embedding length")
    return value


def generation_model_path(settings: Settings) -> Path:
    return settings.worker.model_path or default_generation_model()


def open_knowledge_base(settings: Settings) -> tuple[KnowledgeBase, Path]:
    """Open (or create) the knowledge base for the configured embedding model."""
    embedding_model = resolve_embedding_model(settings.kb, settings.cache_dir)
    kb = KnowledgeBase.open(
        settings.kb_path,
        dim=embedding_dim(embedding_model),
        embedding_identity=embedding_model_identity(embedding_model),
    )
    return kb, embedding_model
