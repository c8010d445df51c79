"""Split manual text into sentences, list items, table rows and headings, with exact offsets.

Why offsets: a quote shown to a technician must be the manual's own words, character for
character, so every unit is a span of the source (`text[s.start:s.end] == s.text`) rather than a
cleaned-up copy. Spans are trimmed of surrounding whitespace, never empty, in order and never
overlapping; every non-whitespace character of the source lies in exactly one of them.

Structure first, punctuation second:
- a line starting with `#` (a Markdown heading), a paragraph underlined with `===` or `---` (a
  setext heading, unit and underline together), a table row (`|...`) and each line of a fenced
  code block is a unit of its own: none of them is prose, and callers may drop them;
- a list item (`- `, `* `, `1. `, `2) `, `a) `, or an option row of a command's help,
  `-P #   Parity ...`, its description after two spaces or more) starts a new unit; its
  wrapped continuation lines belong to it; a blank line ends a paragraph;
- inside a paragraph or item, a sentence ends at `.`, `!` or `?` (closing quotes and brackets
  included) followed by whitespace and a character that can start a sentence (not a lowercase
  letter). Manuals are full of dots that end nothing: decimals (3.3, 0.5 bar), section and
  version numbers, paths (/etc/mosquitto/conf.d), file and option names (mosquitto.conf,
  log.level) have no whitespace after the dot; abbreviations (e.g., i.e., approx., No. 5,
  Fig. 3) are listed; and a bare list marker ("2.") is never a sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sentence:
    """One unit of the source: `text == source[start:end]`, trimmed, never empty."""

    start: int
    end: int
    text: str


# A dot after these never ends a sentence ("approx. 5 bar", "e.g. the pump", "cf. E203").
_ALWAYS_ABBREVIATIONS = frozenset(
    {
        "e.g", "eg", "i.e", "ie", "approx", "appr", "cf", "vs", "incl", "excl", "ca", "resp",
        "esp", "dr", "mr", "mrs", "prof", "ref", "viz", "al", "w.r.t", "cont", "abbr",
    }
)  # fmt: skip
# A dot after these ends a sentence unless a number follows ("No. 5", "Fig. 3", "max. 85 ms"),
# because they are also ordinary sentence-final words ("...wait 5 min. Then...", "No.").
_NUMBER_ABBREVIATIONS = frozenset(
    {
        "no", "nr", "nos", "fig", "figs", "tab", "sec", "sect", "ch", "chap", "eq", "p", "pp",
        "vol", "art", "para", "max", "min", "pos", "item", "step", "page", "rev", "ver", "v",
        "op", "qty", "dia", "pt", "part", "etc",
    }
)  # fmt: skip

_ITEM_MARKER = re.compile(
    r"[ \t]*(?:[-*+\u2022\u25aa\u2013]|\(?\d{1,3}[.)]|\(?[a-z]\))[ \t]+\S"
    # a row of a command's option list: "  -P #        Parity (none, even, odd, ...)"
    r"|[ \t]*--?[A-Za-z][\w-]*(?:[ =]\S+)?[ \t]{2,}\S"
)
_UNDERLINE = re.compile(r"={3,}|-{3,}")
_TABLE_RULE = re.compile(r"\|[\s:|-]*-[\s:|-]*")
_FENCE = re.compile(r"[ \t]*(?:```|~~~)")
_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*")
_BARE_MARKER = re.compile(r"\(?(?:\d{1,3}|[a-zA-Z])[.)]")
_DOTTED_ABBREVIATION = re.compile(r"(?:[a-z]\.)+[a-z]")
_OPENING_PUNCTUATION = "([{\"'\u201c\u2018"


def split_sentences(text: str) -> list[Sentence]:
    """The units of `text` in order (see the module docstring for what a unit is)."""
    units: list[Sentence] = []
    for start, end, prose in _blocks(text):
        if not prose:
            units.extend(_trimmed(text, start, end))
            continue
        piece_start = start
        for cut in _sentence_ends(text, start, end):
            units.extend(_trimmed(text, piece_start, cut))
            piece_start = cut
        units.extend(_trimmed(text, piece_start, end))
    return units


def is_heading(sentence: Sentence) -> bool:
    """A Markdown heading (`# Title`, or a title underlined with === or ---): a caption, not a
    statement worth quoting alone."""
    if sentence.text.startswith("#"):
        return True
    last_line = sentence.text.rpartition("\n")[2]
    return "\n" in sentence.text and _UNDERLINE.fullmatch(last_line.strip()) is not None


def is_table_rule(sentence: Sentence) -> bool:
    """The rule under a table's header row (`| --- | :-: |`): the row above it is a caption."""
    return _TABLE_RULE.fullmatch(sentence.text) is not None


def is_table_row(sentence: Sentence) -> bool:
    """A table row (`| a | b |`): one record, complete on its own."""
    return sentence.text.startswith("|")


def is_list_item(sentence: Sentence) -> bool:
    """The first unit of a list item or numbered step."""
    return _ITEM_MARKER.match(sentence.text) is not None


def _lines(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each line without its newline; only '\\n' breaks lines."""
    pos = 0
    length = len(text)
    while pos <= length:
        newline = text.find("\n", pos)
        end = length if newline < 0 else newline
        yield pos, end
        if newline < 0:
            return
        pos = newline + 1


def _blocks(text: str) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is_prose) blocks: paragraphs and list items are prose, to be split further;
    headings, table rows and code lines are units as they stand."""
    open_start: int | None = None
    open_end = 0
    in_fence = False
    for start, end in _lines(text):
        line = text[start:end]
        stripped = line.strip()
        fence = _FENCE.match(line) is not None
        standalone = in_fence or fence or stripped.startswith(("#", "|"))
        if fence:
            in_fence = not in_fence
        if open_start is not None and not in_fence and _UNDERLINE.fullmatch(stripped):
            yield open_start, end, False  # a setext heading: the paragraph and its underline
            open_start = None
            continue
        if not stripped or standalone or _ITEM_MARKER.match(line):
            if open_start is not None:
                yield open_start, open_end, True
                open_start = None
            if standalone and stripped:
                yield start, end, False
            elif stripped:
                open_start, open_end = start, end
            continue
        if open_start is None:
            open_start = start
        open_end = end
    if open_start is not None:
        yield open_start, open_end, True


def _sentence_ends(text: str, start: int, end: int) -> Iterator[int]:
    """Offsets inside [start, end) just after a sentence-ending punctuation run."""
    piece_start = start
    for match in _BOUNDARY.finditer(text, start, end):
        cut = match.end()
        follower = _next_visible(text, cut, end)
        if follower is None:
            return
        if follower == cut:  # no whitespace after the dot: 3.3, conf.d, e.g.the
            continue
        if _is_boundary(text, piece_start, match, text[follower]):
            yield cut
            piece_start = cut


def _is_boundary(text: str, piece_start: int, match: re.Match[str], follower: str) -> bool:
    if follower.islower():
        return False
    if _BARE_MARKER.fullmatch(text[piece_start : match.end()].strip().lstrip(_OPENING_PUNCTUATION)):
        return False  # "2. Place the tray": the marker belongs to its step
    if match.group() != ".":
        return True
    word_start = match.start()
    while word_start > piece_start and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start : match.start()].lstrip(_OPENING_PUNCTUATION).lower()
    if word in _ALWAYS_ABBREVIATIONS or _DOTTED_ABBREVIATION.fullmatch(word):
        return False
    return not (word in _NUMBER_ABBREVIATIONS and follower.isdigit())


def _next_visible(text: str, pos: int, end: int) -> int | None:
    while pos < end and text[pos].isspace():
        pos += 1
    return pos if pos < end else None


def _trimmed(text: str, start: int, end: int) -> list[Sentence]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return [Sentence(start, end, text[start:end])] if start < end else []
