"""A short answer made only of the manual's own words: quotes, attributed and cited.

When the model cannot be trusted (or is not there), the best answer a gateway can give is the
sentence of the manual that answers the question, with where it comes from:

    According to press-p2-manual.md (3.3 Filter element): "...quote..." [1]

Nothing is generated: the only words besides the quotes are the attribution and the citation
marker, which `check.check_answer` knows to ignore, so every sentence of an extractive answer
passes the grounding check against its quotes. A second quote is added only if it adds
information (most of its content words not already said) and fits in `max_chars`; a quote that
does not fit is shortened at a word boundary and marked with an ellipsis.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.grounding.quotes import Quote
from gateway.grounding.terms import content_words

COVERED_FRACTION = 0.7
"""A quote whose content words are at least this much already said adds nothing: skipped."""
MAX_LABEL_CHARS = 120
MIN_SHORTENED_CHARS = 40
"""A quote is shortened to fit only if at least this much of it remains; else it is left out."""
ELLIPSIS = "\u2026"
_SEPARATOR = "\n\n"  # a paragraph break: one quote's last line never runs into the next


def extractive_answer(
    quotes: Sequence[tuple[int, str, Quote]],
    *,
    max_quotes: int = 2,
    max_chars: int = 600,
) -> str:
    """An answer of at most `max_quotes` quotes and `max_chars` characters; "" if none fits.

    Each item is (excerpt number, 1-based as cited in the answer; where-label such as
    "press-p2-manual.md, 3.3 Filter element"; the quote), best first. The label's first
    ", " separates the document from its section: "doc (section)".
    """
    parts: list[str] = []
    said: set[str] = set()
    used = 0
    for number, where, quote in quotes:
        if len(parts) >= max_quotes:
            break
        body = _tidy(quote.text)
        words = set(content_words(body))
        if not body or (parts and words and len(words & said) >= COVERED_FRACTION * len(words)):
            continue
        separator = _SEPARATOR if parts else ""
        prefix = f'According to {_label(where)}: "'
        suffix = f'" [{number}]'
        room = max_chars - used - len(separator) - len(prefix) - len(suffix)
        if len(body) > room:
            shortened = _shorten(body, room)
            if shortened is None:
                break
            body = shortened
        part = prefix + body + suffix
        used += len(separator) + len(part)
        parts.append(part)
        said |= words
    return _SEPARATOR.join(parts)


def _label(where: str) -> str:
    """'doc, section' as 'doc (section)', on one line, without the characters that would end
    the attribution early (':' and quotes) or look like a citation ('[1]')."""
    where = re.sub(r"\s+", " ", where).strip()
    where = where.replace(":", " -").replace('"', "'").replace("\u201c", "'")
    where = where.replace("[", "(").replace("]", ")")
    document, _, section = where.partition(", ")
    label = f"{document} ({section})" if section else document
    if len(label) > MAX_LABEL_CHARS:
        label = label[: MAX_LABEL_CHARS - 1].rstrip() + ELLIPSIS
    return label or "the manual"


def _tidy(text: str) -> str:
    """The quote with runs of spaces collapsed and indentation dropped; line breaks and single
    blank lines kept, so the answer has the structure (steps, rows, paragraphs) of the manual
    and splits into the same sentences."""
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _shorten(text: str, room: int) -> str | None:
    """`text` cut at a word boundary to at most `room` characters including an ellipsis."""
    if room < MIN_SHORTENED_CHARS:
        return None
    cut = text[: room - len(ELLIPSIS) + 1]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    cut = cut[:space] if space > 0 else cut[: room - len(ELLIPSIS)]
    return cut.rstrip(" \n,;:(-") + ELLIPSIS
