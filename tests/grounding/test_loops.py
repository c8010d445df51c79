from __future__ import annotations

import re

import pytest

from gateway.grounding.loops import RepetitionGuard, has_loop
from tests.grounding.samples import ALARM_E203, E305_CAUSES, FILTER_PROCEDURE

LOOP = "you can skip the step. you can skip the step. you can skip the step."


def pieces(text: str) -> list[str]:
    """Roughly how a tokenizer streams text: words with their leading space, and punctuation."""
    return re.findall(r"\s*\w+|\s*[^\w\s]|\s+", text)


def feed_all(guard: RepetitionGuard, text: str) -> bool:
    for piece in pieces(text):
        if guard.feed(piece):
            return True
    return guard.flush()


def test_repeated_sentence_stops_and_keeps_one_copy() -> None:
    guard = RepetitionGuard()
    assert feed_all(guard, LOOP)
    assert guard.reason is not None
    assert "sentence" in guard.reason
    assert guard.text == "you can skip the step."
    assert has_loop(LOOP)


def test_stop_comes_early_and_feed_stays_stopped() -> None:
    guard = RepetitionGuard()
    fed = []
    for piece in pieces(LOOP + " " + LOOP):
        fed.append(piece)
        if guard.feed(piece):
            break
    assert len("".join(fed)) < len(LOOP) + 5
    assert guard.feed(" more") is True
    assert guard.text == "you can skip the step."


@pytest.mark.parametrize("text", [ALARM_E203, FILTER_PROCEDURE, E305_CAUSES])
def test_non_repeating_text_is_kept_intact(text: str) -> None:
    guard = RepetitionGuard()
    assert not feed_all(guard, text)
    assert guard.reason is None
    assert guard.text == text
    assert not has_loop(text)


def test_word_run() -> None:
    guard = RepetitionGuard()
    assert feed_all(guard, "Check the pump. Then check the the the the")
    assert guard.reason is not None
    assert "in a row" in guard.reason
    assert guard.text == "Check the pump."


def test_phrase_repeated_three_times_across_different_sentences() -> None:
    text = (
        "First open the drain valve slowly. Wait, then open the drain valve again. "
        "Finally open the drain valve completely."
    )
    guard = RepetitionGuard()
    assert feed_all(guard, text)
    assert guard.reason is not None
    assert "phrase" in guard.reason
    assert guard.text == "First open the drain valve slowly."


def test_runaway_list() -> None:
    items = "".join(f"{n}. Check item number {n * 7} of the press.\n" for n in range(1, 30))
    guard = RepetitionGuard(max_list_items=5)
    assert feed_all(guard, "Steps:\n" + items)
    assert guard.reason == "list longer than 5 items"
    assert guard.text.endswith("5. Check item number 35 of the press.")
    assert "6." not in guard.text
    bullets = "Parts:\n" + "".join(f"- part {n * 11} here\n" for n in range(20))
    assert has_loop(bullets)
    assert not has_loop("Parts:\n" + "".join(f"- part {n * 11} here\n" for n in range(12)))


def test_numbered_list_with_the_same_item_repeated() -> None:
    guard = RepetitionGuard()
    assert feed_all(guard, "1. Check the filter.\n2. Check the filter.\n3. Check the filter.\n")
    assert guard.text == "1. Check the filter."


def test_feeding_in_any_pieces_gives_the_same_result() -> None:
    text = "Reset the alarm. Reset the alarm on the panel. Reset the alarm on the panel. Done."
    whole = RepetitionGuard()
    whole.feed(text)
    whole.flush()
    by_char = RepetitionGuard()
    for char in text:
        if by_char.feed(char):
            break
    by_char.flush()
    assert whole.reason == by_char.reason
    assert whole.text == by_char.text == "Reset the alarm. Reset the alarm on the panel."


def test_limits_are_parameters() -> None:
    assert not RepetitionGuard(max_token_run=5).feed("the the the the ")
    with pytest.raises(ValueError, match="at least 2"):
        RepetitionGuard(ngram=1)
