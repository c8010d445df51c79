"""Typed errors of the RAG stage.

They subclass the gateway's own errors so the pipeline's generic handling (error codes, logging)
applies, and each carries the path it concerns: an operator fixing a knowledge base needs to know
which file is at fault, not only that "something" failed.
"""

from __future__ import annotations

from pathlib import Path

from gateway.errors import GatewayError, KnowledgeBaseError


class EmbeddingModelError(GatewayError):
    """The embedding model cannot be converted, read or run."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class DocumentError(KnowledgeBaseError):
    """One document cannot be ingested; the others are unaffected."""

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class UnsupportedDocument(DocumentError):
    """The file's extension is not one the loaders understand."""


class UnreadableDocument(DocumentError):
    """The file exists but cannot be read or parsed (permissions, encoding, corrupt PDF...)."""
