"""Choose the similarity threshold below which the gateway answers with the fallback text.

The right threshold depends on the embedding model and on the documents: all-MiniLM-L6-v2 puts
unrelated texts around 0.0-0.2 and paraphrases around 0.5-0.8, but a KB of terse alarm tables
scores lower than one of prose. So it is measured, not guessed: the best hit similarity of
questions the KB should answer versus questions it should not, and the threshold that separates
them best.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.rag.store import KnowledgeBase

EmbedFn = Callable[[Sequence[str]], list[list[float]]]

OFF_TOPIC_QUESTIONS: tuple[str, ...] = (
    "What will the weather be like tomorrow afternoon?",
    "Is it going to rain this weekend?",
    "Who won the football match last night?",
    "How many players are on a basketball team?",
    "When are the next Olympic Games?",
    "How do I bake a chocolate cake?",
    "What is a good recipe for vegetable soup?",
    "How long should I boil an egg?",
    "Can you recommend a good science fiction novel?",
    "Who wrote Pride and Prejudice?",
    "What is the capital of Australia?",
    "How tall is Mount Everest?",
    "What time does the cinema open on Sunday?",
    "Which movie won the Oscar for best picture last year?",
    "How do I reset my email password?",
    "What is the best smartphone to buy this year?",
    "How do I get a passport renewed?",
    "What are the symptoms of the flu?",
    "How much water should I drink every day?",
    "Tell me a joke about cats.",
    "What is the meaning of life?",
    "How do I plant tomatoes in my garden?",
    "When should I prune rose bushes?",
    "What is the exchange rate between the euro and the dollar?",
    "Should I invest in shares or bonds?",
    "How do I book a flight to Lisbon?",
    "What are good places to visit in Japan?",
    "Translate 'good morning' into Spanish.",
    "Who painted the Mona Lisa?",
    "How many moons does Jupiter have?",
    "What is the speed of light?",
    "How do I train my dog to sit?",
)


@dataclass(frozen=True, slots=True)
class Distribution:
    min: float
    p10: float
    p50: float
    p90: float
    max: float
    n: int


@dataclass(frozen=True, slots=True)
class Recommendation:
    threshold: float
    in_domain_below: int
    off_topic_above: int
    explanation: str


@dataclass(frozen=True, slots=True)
class QuestionScore:
    question: str
    best: float
    document: str
    section: str


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    in_domain: Distribution
    off_topic: Distribution
    recommendation: Recommendation
    in_domain_scores: tuple[QuestionScore, ...]
    off_topic_scores: tuple[QuestionScore, ...]


def summarise(scores: Sequence[float]) -> Distribution:
    if not scores:
        raise ValueError("cannot summarise an empty list of scores")
    values = np.asarray(scores, dtype=np.float64)
    p10, p50, p90 = (float(v) for v in np.percentile(values, [10, 50, 90]))
    return Distribution(float(values.min()), p10, p50, p90, float(values.max()), len(values))


def recommend_threshold(
    in_domain_best: Sequence[float], off_topic_best: Sequence[float]
) -> Recommendation:
    """The threshold with the fewest misclassified questions; among equals, the widest gap's middle.

    A question is answered when its best similarity is >= the threshold. Every threshold between
    two consecutive observed scores misclassifies the same questions, so only those intervals are
    compared; taking the middle of the widest one leaves the largest margin on both sides.
    """
    if not in_domain_best or not off_topic_best:
        raise ValueError("need at least one in-domain and one off-topic score")
    inside = np.asarray(in_domain_best, dtype=np.float64)
    outside = np.asarray(off_topic_best, dtype=np.float64)
    edges = np.unique(np.concatenate([inside, outside]))
    # Interval i lies between edges[i-1] and edges[i]; the outer ones are open-ended (width 0.1,
    # so that a perfectly separable sample still prefers its inner gap).
    lows = np.concatenate([[edges[0] - 0.1], edges])
    highs = np.concatenate([edges, [edges[-1] + 0.1]])
    best: tuple[int, float, float] | None = None  # (errors, -width, threshold)
    for low, high in zip(lows, highs, strict=True):
        threshold = float((low + high) / 2)
        errors = int((inside < threshold).sum() + (outside >= threshold).sum())
        key = (errors, -float(high - low), threshold)
        if best is None or key < best:
            best = key
    assert best is not None
    threshold = round(best[2], 3)
    below = int((inside < threshold).sum())
    above = int((outside >= threshold).sum())
    gap = float(inside.min() - outside.max())
    if gap > 0:
        explanation = (
            f"In-domain and off-topic scores are separated by a gap of {gap:.3f} "
            f"({outside.max():.3f} .. {inside.min():.3f}); the threshold is its middle."
        )
    else:
        explanation = (
            f"The distributions overlap by {-gap:.3f}: at {threshold:.3f}, {below} of "
            f"{len(inside)} in-domain questions would get the fallback and {above} of "
            f"{len(outside)} off-topic questions would reach the model (fewest errors possible)."
        )
    return Recommendation(threshold, below, above, explanation)


def best_scores(
    kb: KnowledgeBase, embed_fn: EmbedFn, questions: Sequence[str], *, top_k: int = 4
) -> list[QuestionScore]:
    """Best hit similarity per question, exactly as the answering pipeline would see it."""
    vectors = embed_fn(list(questions))
    results = []
    for question, vector in zip(questions, vectors, strict=True):
        hits = kb.search(question, vector, top_k=top_k)
        if not hits:
            results.append(QuestionScore(question, -1.0, "", ""))
            continue
        top = max(hits, key=lambda h: h.similarity)
        results.append(QuestionScore(question, top.similarity, top.document, top.section))
    return results


def calibrate(
    kb: KnowledgeBase,
    embed_fn: EmbedFn,
    in_domain_questions: Sequence[str],
    *,
    off_topic_questions: Sequence[str] = OFF_TOPIC_QUESTIONS,
    top_k: int = 4,
) -> CalibrationReport:
    if not in_domain_questions:
        raise ValueError("calibration needs at least one in-domain question")
    inside = best_scores(kb, embed_fn, in_domain_questions, top_k=top_k)
    outside = best_scores(kb, embed_fn, off_topic_questions, top_k=top_k)
    recommendation = recommend_threshold([s.best for s in inside], [s.best for s in outside])
    return CalibrationReport(
        in_domain=summarise([s.best for s in inside]),
        off_topic=summarise([s.best for s in outside]),
        recommendation=recommendation,
        in_domain_scores=tuple(inside),
        off_topic_scores=tuple(outside),
    )


def load_questions(path: Path) -> list[str]:
    """One question per line; blank lines and lines starting with # are ignored."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
