"""Bring your own model: the checks that refuse an unusable generation model at start, on small
GGUF files written here with the `gguf` package (the header is all the checks read)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from gateway.bundled import default_embedding_archive, default_generation_model
from gateway.errors import ModelNotFound, ModelUnusable
from gateway.worker.model_check import OVERHEAD_BYTES, check_generation_model

TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"


def write_gguf(path: Path, *, chat_template: str | None, pad_to: int = 0) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test-model")
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if pad_to:
        with path.open("r+b") as fh:
            fh.truncate(pad_to)  # sparse: the size is what the check sees, no disk is used
    return path


@pytest.fixture
def embedding(tmp_path: Path) -> Path:
    path = tmp_path / "embedding.gguf"
    path.write_bytes(b"\0" * (1 << 20))
    return path


def test_a_small_instruct_model_is_accepted(tmp_path: Path, embedding: Path) -> None:
    model = write_gguf(tmp_path / "ok.gguf", chat_template=TEMPLATE)
    info = check_generation_model(model, embedding_model=embedding, memory_limit_mb=256)
    assert info.architecture == "llama"
    assert info.name == "tiny-test-model"
    assert info.needed_bytes == model.stat().st_size + (1 << 20) + OVERHEAD_BYTES


def test_a_missing_file_is_refused(tmp_path: Path, embedding: Path) -> None:
    with pytest.raises(ModelNotFound, match="does not exist"):
        check_generation_model(
            tmp_path / "absent.gguf", embedding_model=embedding, memory_limit_mb=1024
        )


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path, embedding: Path) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(b"PK\x03\x04 a zip archive, not a model" * 10)
    with pytest.raises(ModelUnusable, match="not a usable GGUF model"):
        check_generation_model(model, embedding_model=embedding, memory_limit_mb=1024)


def test_a_model_without_chat_template_is_refused(tmp_path: Path, embedding: Path) -> None:
    model = write_gguf(tmp_path / "base.gguf", chat_template=None)
    with pytest.raises(ModelUnusable, match="no chat template"):
        check_generation_model(model, embedding_model=embedding, memory_limit_mb=1024)


def test_a_model_larger_than_the_memory_limit_is_refused(tmp_path: Path, embedding: Path) -> None:
    model = write_gguf(tmp_path / "big.gguf", chat_template=TEMPLATE, pad_to=2 << 30)
    with pytest.raises(ModelUnusable, match=r"worker\.memory_limit_mb is 1024") as caught:
        check_generation_model(model, embedding_model=embedding, memory_limit_mb=1024)
    assert "raise it to at least 2113" in str(caught.value)  # 2048 + 1 + 64 MiB


def test_a_worker_limit_above_the_units_memory_max_is_refused(
    tmp_path: Path, embedding: Path
) -> None:
    model = write_gguf(tmp_path / "ok.gguf", chat_template=TEMPLATE)
    with pytest.raises(ModelUnusable, match="MemoryMax"):
        check_generation_model(
            model, embedding_model=embedding, memory_limit_mb=2048, unit_memory_max=1600 << 20
        )


def test_the_bundled_model_passes_the_default_limits() -> None:
    info = check_generation_model(
        default_generation_model(),
        embedding_model=default_embedding_archive(),
        memory_limit_mb=1024,
        unit_memory_max=1600 << 20,
    )
    assert info.name
    assert info.needed_bytes < 1024 << 20
