"""What a knowledge-base search hands the question and diagnosis paths.

A Protocol rather than the store's own Hit class, so the answering logic is testable with any
object of this shape and the rooms above never depend on how the store is built.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol


class SearchHit(Protocol):
    @property
    def chunk_id(self) -> int: ...
    @property
    def document(self) -> str: ...
    @property
    def section(self) -> str: ...
    @property
    def page(self) -> int | None: ...
    @property
    def text(self) -> str: ...
    @property
    def similarity(self) -> float: ...


class Search(Protocol):
    """(question text, question vector) -> hits, best first.

    `prefer`: chunk ids a conversation cited before (gateway/questions/conversation.py); they
    and the other candidates of their documents take part in the fusion."""

    def __call__(
        self, text: str, vector: Sequence[float], /, *, prefer: Sequence[int] = ()
    ) -> Awaitable[Sequence[SearchHit]]: ...
