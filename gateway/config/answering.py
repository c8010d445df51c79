"""The question path's sections: [journal], [kb], [worker], [answer_cache], [streaming], [queue]."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from gateway.config.base import Section, list_from_text


class JournalConfig(Section):
    path: Path = Field(default=Path("journal.sqlite3"), description="Relative to data_dir.")
    retention_h: float = Field(
        default=72.0, gt=0, description="Answered questions are kept this long for deduplication."
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="FULL survives power loss; NORMAL only process crashes, and is faster.",
    )
    unnamed_dedup_s: float = Field(
        default=300.0,
        gt=0,
        description=(
            "A question without an id of its own collapses with the same payload from the same "
            "terminal only within this window (redeliveries); asked again later, it is answered "
            "afresh."
        ),
    )


class ConversationConfig(Section):
    """Follow-up questions: the turns a question with a `conversation_id` is answered with."""

    max_turns: int = Field(
        default=4,
        ge=0,
        le=32,
        description="Earlier turns kept per conversation (oldest dropped first); 0 turns it off.",
    )
    max_bytes: int = Field(
        default=8_192,
        ge=256,
        le=262_144,
        description="Question and answer text kept per conversation; oldest whole turns dropped.",
    )
    max_age_s: float = Field(
        default=1_800.0,
        gt=0,
        description=(
            "A turn older than this is forgotten: a question after a long pause starts afresh "
            "(a shift change, the next machine)."
        ),
    )
    nats_bucket: str = Field(
        default="EDGE_{site}_CONVERSATIONS",
        pattern=r"^[A-Za-z0-9_{}-]*$",
        max_length=200,
        description=(
            "With NATS enabled, the turns are also kept in this JetStream key-value bucket, "
            "shared by every instance, so a follow-up answered by another instance of the "
            "queue group keeps its context ({site} allowed; empty: per instance only)."
        ),
    )


class KnowledgeBaseConfig(Section):
    path: Path = Field(default=Path("kb.sqlite3"), description="Relative to data_dir.")
    embedding_model: Path | None = Field(
        default=None,
        description=(
            "A GGUF embedding model. Unset: all-MiniLM-L6-v2 from the bundled package, converted "
            "to GGUF once into cache_dir."
        ),
    )
    chunk_chars: int = Field(default=1_200, ge=200, le=8_000)
    chunk_overlap_chars: int = Field(default=150, ge=0, le=2_000)
    top_k: int = Field(
        default=6,
        ge=1,
        le=16,
        description="Chunks retrieved per question; each gets its best quote.",
    )
    similarity_threshold: float = Field(
        default=0.30,
        ge=-1.0,
        le=1.0,
        description=(
            "Below this best cosine similarity the fallback is sent and the model is not asked. "
            "Calibrated for all-MiniLM-L6-v2; rerun `edge-gateway kb calibrate` for another model."
        ),
    )
    weak_similarity: float = Field(
        default=0.45,
        ge=-1.0,
        le=1.0,
        description=(
            "Below this best similarity, a question naming something (a product, an acronym) "
            "that no retrieved excerpt mentions falls back: it is about something else. Codes "
            "such as P9 or E999 that no excerpt mentions fall back at any similarity."
        ),
    )
    fallback_text: str = Field(
        default=(
            "I could not find this in the plant documentation. Please contact technical support."
        ),
        min_length=1,
        max_length=2_000,
    )


class AnswerConfig(Section):
    """How the answer text is made: the manual's own lines first, model text only if checked."""

    mode: Literal["extractive", "generative", "checked"] = Field(
        default="extractive",
        description=(
            "extractive: the answer is the best quotes, no model call; generative: model text, "
            "checked but published as written; checked: model text with every sentence checked "
            "against the excerpts, what fails removed, replaced by the quotes if nothing passes. "
            "Extractive is the default: with the bundled 135M model it carries the key fact "
            "most often and is ten times faster (make bench, section quality)."
        ),
    )
    quotes: int = Field(default=3, ge=1, le=6, description="Quotes in an extractive answer.")
    quote_max_chars: int = Field(
        default=400, ge=80, le=1_000, description="Longest quote taken from one chunk."
    )
    prompt_budget_tokens: int = Field(
        default=240,
        ge=64,
        le=16_384,
        description=(
            "Excerpt tokens in the prompt: the best sentences of the retrieved chunks up to this "
            "many tokens, instead of whole chunks (a small model condenses 2-3 sentences well "
            "and reads 1,200 tokens badly; shorter prompts are faster too)."
        ),
    )
    support_threshold: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description=(
            "A generated sentence is supported when this share of its content words is in one "
            "excerpt sentence (or two adjacent ones); see README, What a terminal shows."
        ),
    )
    repeat_penalty: float = Field(
        default=1.1, ge=1.0, le=2.0, description="llama.cpp's repeat penalty for answers."
    )


class WorkerConfig(Section):
    model_path: Path | None = Field(
        default=None,
        description="A GGUF chat model. Unset: the bundled SmolLM2-135M-Instruct.",
    )
    n_ctx: int = Field(
        default=1_024,
        ge=256,
        le=131_072,
        description=(
            "Context window in tokens. The KV cache is allocated for all of it: 1,024 holds an "
            "answer prompt (answer.prompt_budget_tokens of excerpts + instructions + question) "
            "and worker.max_tokens, and a diagnosis prompt with diagnosis.max_tokens; 2,048 "
            "costs the bundled model 23 MB more (make bench, footprint). Prompts are fitted to "
            "n_ctx - max_tokens, never cut mid-excerpt."
        ),
    )
    n_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description=(
            "Inference threads; 0 means all the cores the worker may use. Never more than those "
            "(CPU affinity, and cpu_quota_percent / 100): one worker, so workers x threads <= "
            "cores; more only slows llama.cpp down (docs/performance.md)."
        ),
    )
    flash_attn: bool = True
    kv_cache_type: Literal["f16", "q8_0"] = Field(
        default="q8_0",
        description=(
            "Type of the KV cache's keys and values. q8_0 halves it (needs flash_attn) with no "
            "measurable loss on the quality bench; f16 is llama.cpp's default."
        ),
    )
    prefix_reuse: bool = Field(
        default=True,
        description=(
            "Keep the evaluated prompt in llama.cpp's KV cache and evaluate only what differs on "
            "the next request (the fixed instructions are not evaluated again). Off: every "
            "prompt is evaluated from scratch (for benchmarks)."
        ),
    )
    max_tokens: int = Field(
        default=96,
        ge=1,
        le=8_192,
        description="Answer length cap in tokens: 1-3 sentences need 20-60; a loop is stopped "
        "earlier anyway.",
    )
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    request_timeout_s: float = Field(default=60.0, gt=0)
    start_timeout_s: float = Field(default=60.0, gt=0)
    memory_limit_mb: int = Field(
        default=1_024, ge=64, description="Hard memory limit of the worker (cgroup or RLIMIT_AS)."
    )
    cpu_quota_percent: int = Field(
        default=0, ge=0, description="CPU quota in percent of one core (200 = two cores); 0 = none."
    )
    restart_budget: int = Field(
        default=5, ge=0, description="Restarts allowed within restart_window_s before `degraded`."
    )
    restart_window_s: float = Field(default=300.0, gt=0)
    restart_backoff_s: float = Field(default=0.5, ge=0)
    cgroup_parent: Path | None = Field(
        default=None,
        description="A writable cgroup directory to create the worker's group in; auto when unset.",
    )


class AnswerCacheConfig(Section):
    """Near-identical questions answered again from memory (gateway/questions/answer_cache.py)."""

    enabled: bool = True
    similarity: float = Field(
        default=0.95,
        ge=0.5,
        le=1.0,
        description="Cosine similarity of the question embeddings needed to reuse an answer.",
    )
    ttl_s: float = Field(default=600.0, gt=0, description="How long an answer may be reused.")
    max_entries: int = Field(default=512, ge=1, le=100_000, description="Least recent out.")


class StreamingConfig(Section):
    """Partial answers (QoS 0, sequence-numbered) while the model writes; see docs/contract.md."""

    terminals: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list,
        description="Terminal ids that always get partials (others ask with `stream: true`).",
    )
    max_backlog: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description=(
            "Partials a bus may hold unsent; past it the text is merged into the next partial "
            "instead of queued."
        ),
    )

    _terminal_list = field_validator("terminals", mode="before")(list_from_text)


class QueueConfig(Section):
    max_depth: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Questions waiting; past this the asker gets busy.",
    )
    priority_burst: int = Field(
        default=2,
        ge=1,
        le=1_000,
        description="Most jobs served ahead of a waiting lower lane (critical > question).",
    )
    max_wait_s: float = Field(
        default=10.0,
        gt=0,
        description="A question is passed only by critical jobs that arrive within this time.",
    )
