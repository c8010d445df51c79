"""Checking a generation model before the worker loads it: bring your own GGUF, safely.

A plant with a bigger box points `worker.model_path` at a larger instruct model. What goes
wrong then goes wrong late and obscurely inside llama.cpp: a base model without a chat template
answers with garbage, a file too large for the worker's memory limit is OOM-killed at load (or
thrashes through its mmap), a non-GGUF file crashes the loader. These checks run at start, read
only the file's header, and refuse with a message that says what to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ModelNotFound, ModelUnusable
from gateway.rag.embedding_model import read_gguf_scalars
from gateway.rag.errors import EmbeddingModelError
from gateway.worker.cgroupfs import own_v2_group, read_file

OVERHEAD_BYTES = 64 << 20
"""Charged to the worker's cgroup beyond the two mapped model files: llama.cpp's buffers, the KV
cache of the default 2k context, the embedding batch. With the bundled models (98 + 46 MB) the
charge measured 135-153 MB (docs/performance.md): the files dominate, and a file only partly
read is only partly charged, so this is an upper bound, not an estimate."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    path: Path
    size_bytes: int
    architecture: str
    name: str
    needed_bytes: int
    """File sizes plus OVERHEAD_BYTES: what the worker's memory limit must allow."""


def check_generation_model(
    path: Path,
    *,
    embedding_model: Path,
    memory_limit_mb: int,
    unit_memory_max: int | None = None,
) -> ModelInfo:
    """The model's facts, or ModelNotFound / ModelUnusable with what to change."""
    if not path.is_file():
        raise ModelNotFound(f"model file {path} does not exist (worker.model_path)")
    try:
        with path.open("rb") as fh:
            meta = read_gguf_scalars(fh)
    except (EmbeddingModelError, OSError) as exc:
        raise ModelUnusable(
            f"{path} is not a usable GGUF model ({exc}); worker.model_path must name a .gguf "
            "instruct/chat model (llama.cpp's format, e.g. a Q4_K_M quantization)"
        ) from exc
    template = meta.get("tokenizer.chat_template")
    if not isinstance(template, str) or not template.strip():
        raise ModelUnusable(
            f"{path} has no chat template (tokenizer.chat_template): it is a base or embedding "
            "model, not an instruct model; choose the -Instruct/-Chat variant of the model"
        )
    size = path.stat().st_size
    embedding = embedding_model.stat().st_size if embedding_model.is_file() else 0
    needed = size + embedding + OVERHEAD_BYTES
    limit = memory_limit_mb << 20
    if needed > limit:
        raise ModelUnusable(
            f"{path} needs about {_mib(needed)} MiB in the worker ({_mib(size)} MiB model, "
            f"{_mib(embedding)} MiB embedding model, {_mib(OVERHEAD_BYTES)} MiB runtime and "
            f"cache) but worker.memory_limit_mb is {memory_limit_mb}: raise it to at least "
            f"{_mib(needed)} (and the unit's MemoryMax above it), or choose a smaller model"
        )
    if unit_memory_max is not None and limit > unit_memory_max:
        raise ModelUnusable(
            f"worker.memory_limit_mb is {memory_limit_mb} but the service may use only "
            f"{_mib(unit_memory_max)} MiB (its MemoryMax): raise MemoryMax in the unit "
            "(systemctl edit edge-gateway) above the worker's limit plus the gateway's ~100 MiB"
        )
    architecture = str(meta.get("general.architecture", ""))
    return ModelInfo(
        path=path,
        size_bytes=size,
        architecture=architecture,
        name=str(meta.get("general.name", path.stem)),
        needed_bytes=needed,
    )


def service_memory_max() -> int | None:
    """The tightest memory.max of the cgroup this process runs in and its parents (a systemd
    unit's MemoryMax under cgroup v2, also when the gateway sits in a delegated leaf below it);
    None when unlimited or unknown."""
    try:
        group = own_v2_group()
    except Exception:
        return None
    limits: list[int] = []
    while (group / "memory.max").exists():
        text = (read_file(group / "memory.max") or "").strip()
        if text.isdigit():
            limits.append(int(text))
        if group.parent == group:
            break
        group = group.parent
    return min(limits) if limits else None


def _mib(size: int) -> int:
    return -(-size // (1 << 20))
