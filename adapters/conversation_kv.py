"""Conversation turns in a NATS JetStream key-value bucket, shared by every gateway instance.

Behind a NATS queue group (or a JetStream work queue) a follow-up may reach another instance
than the question before it. Each instance keeps its own turns in its journal; this bucket is
the copy all of them read, so "and how do I fix it?" is answered in context whichever instance
gets it. nats-py's KeyValue does the storage, the per-key history of one value and the expiry
(the bucket's TTL is `conversation.max_age_s`, after which a turn is not used anyway).

One key per (terminal, conversation): a hash of both, because ids may hold characters a KV key
may not, and because the terminal comes from the subject, so another terminal's key is another
key. The value is the conversation's recent turns as JSON, oldest first, bounded by the caller.
Best effort by design: a bucket that cannot be read or written costs the context of one
follow-up (logged), never an answer; the local journal still has the turns it answered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api

from gateway.config import NatsConfig
from gateway.logging import get_logger
from gateway.questions.conversation import Turn

log = get_logger(__name__)


def turn_key(terminal_id: str, conversation_id: str) -> str:
    return hashlib.sha256(f"{terminal_id}\0{conversation_id}".encode()).hexdigest()[:48]


def encode_turns(turns: Sequence[Turn]) -> bytes:
    rows = [
        {"q": t.question_id, "question": t.question, "answer": t.answer, "cited": list(t.cited),
         "at": t.at}
        for t in turns
    ]  # fmt: skip
    return json.dumps(rows).encode()


def decode_turns(value: bytes) -> list[Turn]:
    rows = json.loads(value)
    return [
        Turn(str(d["q"]), str(d["question"]), str(d["answer"]),
             tuple(int(c) for c in d["cited"]), float(d["at"]))
        for d in rows
    ]  # fmt: skip


class NatsConversationStore:
    def __init__(self, nc: Client, *, bucket: str, ttl_s: float, timeout_s: float) -> None:
        self._nc = nc
        self.bucket = bucket
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._kv: object | None = None

    async def open(self) -> bool:
        """Bind to the bucket, creating it if no instance has; False without JetStream."""
        js = self._nc.jetstream(timeout=self._timeout_s)
        try:
            try:
                self._kv = await js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await js.create_key_value(
                    api.KeyValueConfig(
                        bucket=self.bucket, ttl=self._ttl_s, history=1,
                        storage=api.StorageType.FILE,
                    )
                )  # fmt: skip
                log.info("conversation.bucket_created", bucket=self.bucket, ttl_s=self._ttl_s)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            log.warning(
                "conversation.bucket_unavailable",
                bucket=self.bucket,
                error=repr(exc),
                consequence="a follow-up answered by another instance gets no earlier turns",
            )
            return False
        return True

    async def load(self, terminal_id: str, conversation_id: str) -> list[Turn] | None:
        """The shared turns (oldest first); [] when there are none; None when unreadable."""
        kv = self._kv
        if kv is None:
            return None
        try:
            entry = await kv.get(turn_key(terminal_id, conversation_id))  # type: ignore[attr-defined]
        except nats.js.errors.KeyNotFoundError:
            return []
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            log.warning("conversation.load_failed", bucket=self.bucket, error=repr(exc))
            return None
        try:
            return decode_turns(entry.value or b"[]")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("conversation.unreadable", bucket=self.bucket, error=repr(exc))
            return None

    async def save(self, terminal_id: str, conversation_id: str, turns: Sequence[Turn]) -> bool:
        kv = self._kv
        if kv is None:
            return False
        try:
            await kv.put(turn_key(terminal_id, conversation_id), encode_turns(turns))  # type: ignore[attr-defined]
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            log.warning("conversation.save_failed", bucket=self.bucket, error=repr(exc))
            return False
        return True


async def open_shared_turns(
    nc: Client, bucket: str, ttl_s: float, cfg: NatsConfig
) -> NatsConversationStore | None:
    """The bound bucket, or None when the server has no JetStream (logged)."""
    store = NatsConversationStore(nc, bucket=bucket, ttl_s=ttl_s, timeout_s=cfg.publish_timeout_s)
    return store if await store.open() else None
