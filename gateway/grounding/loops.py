"""Stop a generation that loops, and keep only the part that does not.

A 135M model left to itself repeats: a phrase ("you can skip the step. you can skip the step."),
a single word ("the the the"), or a list that never ends. Every token spent on that is wasted
worker time on a 2-core box and noise for the technician, so the streaming code feeds each piece
to a `RepetitionGuard` and stops as soon as `feed` returns True; `text` is then what is worth
keeping: everything before the first repeated occurrence, trimmed to the last complete sentence.

The guard works on whole words only (a word is complete once a non-word character follows it,
or at `flush`), and keeps constant-size state per word, so each `feed` costs O(new words).
"""

from __future__ import annotations

import re
from collections import deque

# A word keeps its inner hyphens, dots and slashes: HF-2231-B, 3.5, conf.d are one word each.
_WORD = re.compile(r"\w+(?:['\u2019./-]\w+)*")
_WORD_CHAR = re.compile(r"[\w'\u2019./-]")
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*\s")
_KEPT_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*(?=\s|$)|\n")
_BULLETS = frozenset({"-", "*", "+", "\u2022"})


class RepetitionGuard:
    """Feed generated text piece by piece; `feed` returns True once generation should stop.

    Stops on: any word `ngram`-gram occurring `max_ngram_repeats` times; the same sentence or
    line (of at least `min_line_words` words, list numbers ignored) occurring `max_line_repeats`
    times; more than `max_list_items` list items; `max_token_run` identical words in a row.
    """

    def __init__(
        self,
        *,
        ngram: int = 4,
        max_ngram_repeats: int = 3,
        max_line_repeats: int = 2,
        min_line_words: int = 2,
        max_list_items: int = 12,
        max_token_run: int = 3,
    ) -> None:
        if min(ngram, max_ngram_repeats, max_line_repeats, max_token_run) < 2 or min_line_words < 1:
            raise ValueError("repetition limits must be at least 2 (min_line_words at least 1)")
        self._ngram = ngram
        self._max_ngram_repeats = max_ngram_repeats
        self._max_line_repeats = max_line_repeats
        self._min_line_words = min_line_words
        self._max_list_items = max_list_items
        self._max_token_run = max_token_run
        self._text = ""
        self._scanned = 0  # words before this offset are processed
        self._last_word_end = 0
        self._window: deque[tuple[str, int]] = deque(maxlen=ngram)
        self._ngrams: dict[tuple[str, ...], tuple[int, int]] = {}  # (count, 2nd occurrence)
        self._lines: dict[str, tuple[int, int]] = {}
        self._line_words: list[str] = []
        self._line_start = 0
        self._run_word = ""
        self._run_length = 0
        self._run_second = 0
        self._items = 0
        self._numbered_line: int | None = None  # a line starting with a number: "3." next?
        self._cut: int | None = None
        self.reason: str | None = None
        """Why generation was stopped, or None while it may go on."""

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    @property
    def text(self) -> str:
        """All text fed so far, or after a stop the part before the first repetition, trimmed
        to its last complete sentence when it has one."""
        if self._cut is None:
            return self._text
        kept = self._text[: self._cut]
        ends = [match.end() for match in _KEPT_END.finditer(kept)]
        if ends and kept[: ends[-1]].strip():
            kept = kept[: ends[-1]]
        return kept.rstrip()

    def feed(self, piece: str) -> bool:
        """Add generated text; True when generation should stop (and from then on)."""
        if self.reason is not None:
            return True
        self._text += piece
        end = len(self._text)
        while end > self._scanned and _WORD_CHAR.match(self._text, end - 1):
            end -= 1  # a word may continue in the next piece
        return self._scan(end)

    def flush(self) -> bool:
        """The generation ended: judge the last word and sentence too. True if they loop."""
        if self.reason is not None:
            return True
        if self._scan(len(self._text)):
            return True
        return self._end_line()

    def _scan(self, end: int) -> bool:
        for match in _WORD.finditer(self._text, self._scanned, end):
            gap = self._text[self._last_word_end : match.start()]
            if self._word(match.group().lower(), match.start(), gap):
                return True
            self._last_word_end = match.end()
        self._scanned = max(self._scanned, end)
        return False

    def _word(self, word: str, start: int, gap: str) -> bool:
        newline = gap.rfind("\n")
        # "3. Check": the dot after a list number ends no sentence
        number = self._numbered_line is not None and gap[:1] in {".", ")"} and gap[1:2] == " "
        if not number and (newline >= 0 or _SENTENCE_END.search(gap)) and self._end_line():
            return True
        if self._numbered_line is not None:
            if number and self._list_item(self._numbered_line):
                return True
            self._numbered_line = None
        if newline >= 0 or start == len(gap):  # the first word of a line
            line_start = start - len(gap) + newline + 1
            bullet = gap[newline + 1 :].strip()
            if bullet in _BULLETS and self._list_item(line_start):
                return True
            if not bullet and word.isdigit() and len(word) <= 3:
                self._numbered_line = line_start
        return self._token_run(word, start) or self._phrase(word, start) or self._add(word, start)

    def _add(self, word: str, start: int) -> bool:
        if not self._line_words:
            self._line_start = start
        self._line_words.append(word)
        return False

    def _token_run(self, word: str, start: int) -> bool:
        if word != self._run_word:
            self._run_word, self._run_length = word, 1
            return False
        self._run_length += 1
        if self._run_length == 2:
            self._run_second = start
        if self._run_length >= self._max_token_run:
            return self._stop(
                f"word repeated {self._run_length} times in a row: {word!r}", self._run_second
            )
        return False

    def _phrase(self, word: str, start: int) -> bool:
        self._window.append((word, start))
        if len(self._window) < self._ngram:
            return False
        key = tuple(w for w, _ in self._window)
        first = self._window[0][1]
        count, second = self._ngrams.get(key, (0, first))
        count += 1
        self._ngrams[key] = (count, first if count == 2 else second)
        if count >= self._max_ngram_repeats:
            return self._stop(
                f"phrase repeated {count} times: {' '.join(key)!r}", self._ngrams[key][1]
            )
        return False

    def _end_line(self) -> bool:
        words = self._line_words
        self._line_words = []
        while words and words[0].isdigit():
            words = words[1:]  # "2. check the filter" repeats "1. check the filter"
        if len(words) < self._min_line_words:
            return False
        key = " ".join(words)
        count, second = self._lines.get(key, (0, self._line_start))
        count += 1
        self._lines[key] = (count, self._line_start if count == 2 else second)
        if count >= self._max_line_repeats:
            return self._stop(f"sentence repeated {count} times: {key!r}", self._lines[key][1])
        return False

    def _list_item(self, line_start: int) -> bool:
        self._items += 1
        if self._items > self._max_list_items:
            return self._stop(f"list longer than {self._max_list_items} items", line_start)
        return False

    def _stop(self, reason: str, cut: int) -> bool:
        self.reason = reason
        self._cut = cut
        return True


def has_loop(text: str) -> bool:
    """Whether a whole generated text loops, by the default `RepetitionGuard` rules."""
    guard = RepetitionGuard()
    return guard.feed(text) or guard.flush()
