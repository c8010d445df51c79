"""Issue 7: the answer cache's reuse rules, and the partial-answer stream's bookkeeping."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from gateway.questions.answer_cache import AnswerCache, identifiers
from gateway.questions.streaming import PartialStream
from models.answer import Answer, Latency, PartialAnswer, Source

V1 = [1.0, 0.0, 0.0]
NEAR_V1 = [0.99, 0.1, 0.0]  # cosine 0.995
FAR = [0.7, 0.7, 0.0]  # cosine 0.707
CHUNKS = [3, 9, 4]


def answer(text: str = "Check the accumulator.", qid: str = "q1") -> Answer:
    return Answer(
        question_id=qid,
        terminal_id="t1",
        text=text,
        sources=(Source(document="p2.md", section="E203", score=0.7, chunk_id=3),),
        fallback=False,
        model="m",
        latency=Latency(queue_ms=0, retrieve_ms=1, generate_ms=900, total_ms=901),
        answered_at=datetime.now(UTC),
    )


def cache(**kw: float) -> AnswerCache:
    args = {"similarity": 0.95, "ttl_s": 60.0, "max_entries": 8, **kw}
    return AnswerCache(
        similarity=args["similarity"], ttl_s=args["ttl_s"], max_entries=int(args["max_entries"])
    )


def test_identifiers_are_words_with_digits() -> None:
    assert identifiers("What does alarm E203 on press P2 mean?") == {"e203", "p2"}
    assert identifiers("Filter HF-2231-B, 4.5 bar.") == {"hf-2231-b", "4.5"}
    assert identifiers("How do I bleed the pump?") == frozenset()


def test_near_identical_question_hits_and_far_one_misses() -> None:
    c = cache()
    c.store("What does E203 mean?", V1, CHUNKS, answer(), kb_version=1, now=0.0)
    hit = c.lookup("what does E203 mean", NEAR_V1, CHUNKS, kb_version=1, now=1.0)
    assert hit is not None
    assert hit.answer.text == "Check the accumulator."
    assert hit.similarity > 0.95
    assert c.lookup("What does E203 mean?", FAR, CHUNKS, kb_version=1, now=1.0) is None
    assert (c.hits, c.misses) == (1, 1)


def test_other_identifier_or_other_chunks_never_hit() -> None:
    c = cache()
    c.store("What does E203 mean?", V1, CHUNKS, answer(), kb_version=1, now=0.0)
    assert c.lookup("What does E204 mean?", V1, CHUNKS, kb_version=1, now=1.0) is None
    assert c.lookup("What does E203 mean?", V1, [3, 4, 9], kb_version=1, now=1.0) is None


def test_kb_version_change_empties_the_cache() -> None:
    c = cache()
    c.store("What does E203 mean?", V1, CHUNKS, answer(), kb_version=1, now=0.0)
    assert c.lookup("What does E203 mean?", V1, CHUNKS, kb_version=2, now=1.0) is None
    assert len(c) == 0
    assert c.lookup("What does E203 mean?", V1, CHUNKS, kb_version=1, now=1.0) is None


def test_ttl_and_bound() -> None:
    c = cache(ttl_s=10.0, max_entries=2)
    c.store("E1", V1, [1], answer(qid="a"), kb_version=1, now=0.0)
    assert c.lookup("E1", V1, [1], kb_version=1, now=11.0) is None
    for i, qid in enumerate(("a", "b", "c")):
        c.store(f"E{i}", V1, [i], answer(qid=qid), kb_version=1, now=20.0)
    assert len(c) == 2
    assert c.lookup("E0", V1, [0], kb_version=1, now=21.0) is None  # least recent went out
    hit = c.lookup("E2", V1, [2], kb_version=1, now=21.0)
    assert hit is not None
    assert hit.answer.question_id == "c"


def test_same_words_hit_without_an_embedding_until_the_kb_changes() -> None:
    c = cache(ttl_s=10.0)
    c.store("What does E203 mean?", V1, CHUNKS, answer(), kb_version=1, now=0.0)
    hit = c.lookup_exact("  what does   e203 MEAN? ", kb_version=1, now=1.0)
    assert hit is not None
    assert hit.answer.text == "Check the accumulator."
    assert c.lookup_exact("What does E204 mean?", kb_version=1, now=1.0) is None
    assert c.lookup_exact("What does E203 mean?", kb_version=1, now=11.0) is None  # expired
    c.store("What does E203 mean?", V1, CHUNKS, answer(), kb_version=1, now=20.0)
    assert c.lookup_exact("What does E203 mean?", kb_version=2, now=21.0) is None
    c.store("What does E203 mean?", V1, CHUNKS, answer("new"), kb_version=2, now=22.0)
    c.store("What does E203 mean?", V1, CHUNKS, answer("newer"), kb_version=2, now=23.0)
    assert len(c) == 1  # the same question stored again replaces the older answer
    hit = c.lookup_exact("What does E203 mean?", kb_version=2, now=24.0)
    assert hit is not None
    assert hit.answer.text == "newer"


def test_partial_stream_numbers_pieces_and_merges_what_the_bus_refused() -> None:
    sent: list[bytes] = []
    accept = iter([True, False, False, True, True])

    def publish(payload: bytes) -> bool:
        if next(accept):
            sent.append(payload)
            return True
        return False

    stream = PartialStream(publish, question_id="q1", terminal_id="t1")
    for token in ("Check", " the", " accu", "mulator", "."):
        stream.on_token(token)
    stream.finish()
    pieces = [PartialAnswer.model_validate(json.loads(p)) for p in sent]
    assert [p.seq for p in pieces] == [0, 1, 2]
    assert [p.text for p in pieces] == ["Check", " the accumulator", "."]
    assert (stream.sent, stream.merged) == (3, 2)
