"""Keyword search over FTS5: safe queries from free text, and a cost bound on common terms.

BM25 finds the exact codes and part numbers (E203, HF-2231-B) that embeddings blur; a question
full of common words must not make it rank the whole corpus, so terms over a document-frequency
budget are dropped (probed with a bounded, unranked subquery)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import apsw

# BM25 ranks a match in the title/section path 3x one in the body: a heading naming the
# alarm code is the strongest keyword evidence a chunk can have.
_FTS_SQL = (
    "SELECT rowid FROM chunk_fts WHERE chunk_fts MATCH ? ORDER BY bm25(chunk_fts, 1.0, 3.0) LIMIT ?"
)
_MAX_QUERY_TERMS = 32

# Keyword search cost is proportional to the postings of its terms (~0.7 us each here): a term
# whose document frequency is above the budget is no evidence worth that price (at 100k chunks,
# idf <= ln(33) vs ~9 for a code) and is dropped; the rest are kept rarest first while their total
# stays within the budget. Small KBs (chunks <= budget) are never probed: every term is kept.
_KEYWORD_BUDGET_MIN = 2_000
_KEYWORD_BUDGET_FRACTION = 0.03
_DF_PROBE_SQL = "SELECT count(*) FROM (SELECT 1 FROM chunk_fts WHERE chunk_fts MATCH ? LIMIT ?)"


# Dropped from keyword queries only (never from the index): they match nearly every chunk and
# would make BM25 rank on noise. If a question is nothing but these, they are kept.
_STOPWORDS = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "did", "for", "from",
        "has", "have", "how", "i", "in", "is", "it", "its", "me", "mean", "means", "my", "of", "on",
        "or", "please", "should", "the", "this", "that", "to", "was", "what", "when", "where",
        "which", "who", "why", "will", "with", "you", "your",
    }
)  # fmt: skip
# A user token: word characters joined by - . / (part numbers, codes like HF-2231-B or 3.5).
_QUERY_TOKEN = re.compile(r"\w+(?:[-./]\w+)*")


def fts_terms(text: str) -> list[str]:
    """The quoted FTS5 phrases of free text, in order, stopwords dropped (see `fts_query`)."""
    tokens = _QUERY_TOKEN.findall(text.lower())
    unique = list(dict.fromkeys(tokens))
    useful = [t for t in unique if t not in _STOPWORDS] or unique
    return [f'"{t}"' for t in useful[:_MAX_QUERY_TERMS]]


def fts_query(text: str) -> str | None:
    """A safe FTS5 query for free text: each token a quoted phrase, ORed; None when empty.

    Quoting makes every token a literal (no NEAR, column filters, `*`, `-` or `^` from users);
    tokens come from a \\w regex so they cannot contain quotes. A part number such as HF-2231-B
    stays one phrase, which FTS5 tokenizes into the adjacent terms hf 2231 b: it matches the part
    number exactly and still lets "2231" alone find it.
    """
    terms = fts_terms(text)
    return " OR ".join(terms) if terms else None


def keyword_ranked(
    conn: apsw.Connection, terms: Sequence[str], chunks: int, candidates: int
) -> list[int]:
    """Chunk ids by BM25 for the affordable `terms` (see `_KEYWORD_BUDGET_*`), best first."""
    if not terms:
        return []
    budget = max(_KEYWORD_BUDGET_MIN, int(chunks * _KEYWORD_BUDGET_FRACTION))
    if chunks > budget:
        terms = _affordable_terms(conn, terms, budget)
        if not terms:
            return []
    return [int(r[0]) for r in conn.execute(_FTS_SQL, (" OR ".join(terms), candidates))]


def _affordable_terms(conn: apsw.Connection, terms: Sequence[str], budget: int) -> list[str]:
    """Rarest terms first while their document frequencies add up to at most `budget`.

    Each frequency is counted by an unranked subquery capped at budget + 1 rows, so probing costs
    at most `budget` postings a term however common the term is.
    """
    frequency = {}
    for term in terms:
        row = conn.execute(_DF_PROBE_SQL, (term, budget + 1)).fetchone()
        frequency[term] = 0 if row is None else int(row[0])
    kept: list[str] = []
    total = 0
    for term in sorted(terms, key=frequency.__getitem__):
        if total + frequency[term] > budget:
            break
        kept.append(term)
        total += frequency[term]
    return kept
