"""The converted embedding model, run by llama.cpp (real model, no mocks)."""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from gateway.bundled import default_embedding_archive
from gateway.config import KnowledgeBaseConfig
from gateway.errors import ModelNotFound
from gateway.rag.embedder import LlamaEmbedder
from gateway.rag.embedding_model import (
    embedding_model_identity,
    ensure_default_embedding_gguf,
    resolve_embedding_model,
)
from gateway.rag.errors import EmbeddingModelError

pytestmark = pytest.mark.slow


def test_conversion_is_cached(embedding_gguf: Path) -> None:
    before = embedding_gguf.stat()
    again = ensure_default_embedding_gguf(embedding_gguf.parent)
    assert again == embedding_gguf
    # Cached means not converted again: the very same file (inode) with the same mtime.
    after = again.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert not [p for p in embedding_gguf.parent.iterdir() if p.name.endswith(".tmp")]


def test_identity_is_stable_and_names_the_model(embedding_gguf: Path) -> None:
    identity = embedding_model_identity(embedding_gguf)
    assert identity == embedding_model_identity(embedding_gguf)
    assert identity.startswith("bert/all-MiniLM-L6-v2/d384/")


def test_identity_of_a_non_gguf_file(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a model")
    with pytest.raises(EmbeddingModelError, match="not a GGUF"):
        embedding_model_identity(bogus)


def test_resolve_configured_and_default(embedding_gguf: Path, tmp_path: Path) -> None:
    assert resolve_embedding_model(KnowledgeBaseConfig(), embedding_gguf.parent) == embedding_gguf
    configured = KnowledgeBaseConfig(embedding_model=embedding_gguf)
    assert resolve_embedding_model(configured, tmp_path) == embedding_gguf
    missing = KnowledgeBaseConfig(embedding_model=tmp_path / "nope.gguf")
    with pytest.raises(ModelNotFound, match=r"nope\.gguf"):
        resolve_embedding_model(missing, tmp_path)


def test_vectors_are_unit_length_with_384_dims(embedder: LlamaEmbedder) -> None:
    vectors = embedder.embed(["hydraulic pressure low", "", "E203"])
    assert embedder.dim == 384
    assert len(vectors) == 3
    for vector in vectors:
        assert len(vector) == 384
        assert math.isclose(float(np.linalg.norm(vector)), 1.0, abs_tol=1e-6)
    assert embedder.embed([]) == []


def test_long_and_odd_texts_never_crash(embedder: LlamaEmbedder) -> None:
    long_text = "the hydraulic pump delivers oil to the valve block " * 400
    assert embedder.count_tokens(long_text) > embedder.max_tokens
    texts = [long_text, "x" * 20_000, "nul \x00 inside", "lone \ud800 surrogate", "Ünïcödé ✓ 漢字"]
    vectors = embedder.embed(texts)
    assert len(vectors) == len(texts)
    # Truncation keeps the beginning: a text and a longer text with the same start are the same.
    shorter = embedder.embed([long_text[: len(long_text) // 2]])[0]
    assert float(np.dot(vectors[0], shorter)) > 0.999
    with pytest.raises(TypeError):
        embedder.embed("a single string")  # type: ignore[arg-type]


def test_scores_are_well_spread(embedder: LlamaEmbedder) -> None:
    question, paraphrase, related, unrelated = embedder.embed(
        [
            "The hydraulic pressure of the press is too low",
            "Hydraulic system pressure dropped below the minimum on the press",
            "Replace the oil filter element of the hydraulic unit",
            "Which team won the football world cup?",
        ]
    )
    assert float(np.dot(question, paraphrase)) > 0.7
    assert 0.2 < float(np.dot(question, related)) < 0.7
    assert float(np.dot(question, unrelated)) < 0.15


def test_tokenizer_matches_wordpiece(embedder: LlamaEmbedder) -> None:
    """llama.cpp's WPM tokenizer on the phantom-space vocabulary gives BERT's own token ids."""
    import json

    with zipfile.ZipFile(default_embedding_archive()) as zf:
        vocab: dict[str, int] = json.loads(zf.read("tokenizer.json"))["model"]["vocab"]

    def wordpiece(text: str) -> list[int]:
        ids = [vocab["[CLS]"]]
        for word in text.lower().replace("-", " - ").replace("?", " ?").split():
            start = 0
            while start < len(word):
                end = len(word)
                while end > start:
                    piece = word[start:end] if start == 0 else "##" + word[start:end]
                    if piece in vocab:
                        ids.append(vocab[piece])
                        break
                    end -= 1
                else:
                    ids.append(vocab["[UNK]"])
                    break
                start = end
        return [*ids, vocab["[SEP]"]]

    for text in ["What does alarm E203 on press P2 mean?", "Replace filter HF-2231-B", "unaffable"]:
        tokens = embedder._llm.tokenize(text.encode(), add_bos=True, special=False)
        assert tokens == wordpiece(text), text


def test_llama_cpp_matches_a_numpy_bert_forward_pass(embedder: LlamaEmbedder) -> None:
    """The converted GGUF computes what the safetensors weights define (F16 matrices: ~1e-4)."""
    from gateway.rag.embedding_model import _safetensors_arrays

    with zipfile.ZipFile(default_embedding_archive()) as zf:
        weights = {
            k: v.astype(np.float64) for k, v in _safetensors_arrays(zf.read("model.safetensors"))
        }
    erf = np.vectorize(math.erf)

    def norm(x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * weights[f"{name}.weight"] + weights[
            f"{name}.bias"
        ]

    def dense(x: np.ndarray, name: str) -> np.ndarray:
        return x @ weights[f"{name}.weight"].T + weights[f"{name}.bias"]

    def forward(ids: list[int]) -> np.ndarray:
        n, heads, width = len(ids), 12, 32
        x = (
            weights["embeddings.word_embeddings.weight"][ids]
            + weights["embeddings.position_embeddings.weight"][:n]
            + weights["embeddings.token_type_embeddings.weight"][0]
        )
        x = norm(x, "embeddings.LayerNorm")
        for layer in range(6):
            p = f"encoder.layer.{layer}."
            q, k, v = (
                dense(x, p + f"attention.self.{m}").reshape(n, heads, width).transpose(1, 0, 2)
                for m in ("query", "key", "value")
            )
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(width)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attended = (scores @ v).transpose(1, 0, 2).reshape(n, heads * width)
            x = norm(
                x + dense(attended, p + "attention.output.dense"), p + "attention.output.LayerNorm"
            )
            hidden = dense(x, p + "intermediate.dense")
            hidden = 0.5 * hidden * (1 + erf(hidden / math.sqrt(2)))
            x = norm(x + dense(hidden, p + "output.dense"), p + "output.LayerNorm")
        pooled = x.mean(0)
        return pooled / np.linalg.norm(pooled)

    for text in [
        "What does alarm E203 on press P2 mean?",
        "Check the suction filter and oil level.",
    ]:
        ids = embedder._llm.tokenize(text.encode(), add_bos=True, special=False)
        reference = forward(ids)
        assert float(reference @ np.asarray(embedder.embed([text])[0])) > 0.9999


def test_closed_embedder_refuses_work(embedding_gguf: Path) -> None:
    loaded = LlamaEmbedder(embedding_gguf, n_threads=1)
    loaded.close()
    loaded.close()
    with pytest.raises(EmbeddingModelError, match="closed"):
        loaded.embed(["x"])


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        LlamaEmbedder(tmp_path / "missing.gguf")


def test_conversion_is_atomic_and_replaces_stale_files(tmp_path: Path) -> None:
    stale = tmp_path / "all-MiniLM-L6-v2.000000000000.r0.f16.gguf"
    stale.write_bytes(b"old")
    path = ensure_default_embedding_gguf(tmp_path)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert os.access(path, os.R_OK)
