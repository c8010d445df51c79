from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.grounding.quotes import quote_candidates, rank_sentences, select_quote
from gateway.grounding.sentences import Sentence, split_sentences
from tests.grounding.samples import (
    ALARM_E203,
    CHUNKS,
    E305_CAUSES,
    FILTER_PROCEDURE,
    QUESTIONS,
    SAFETY,
    TECHNICAL_DATA,
)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("question", QUESTIONS)
def test_quote_is_an_exact_substring_of_the_chunk(chunk: str, question: str) -> None:
    quote = select_quote(question, chunk)
    assert quote is not None
    assert chunk[quote.start : quote.end] == quote.text
    assert quote.text == quote.text.strip()
    assert len(quote.text) <= 400


def test_alarm_question_quotes_the_alarm_sentence() -> None:
    quote = select_quote("What does alarm E203 mean?", ALARM_E203)
    assert quote is not None
    assert "E203" in quote.text
    assert quote.text.startswith("Alarm E203: hydraulic pressure low.")


def test_part_number_question_finds_the_part() -> None:
    quote = select_quote("How often do I replace HF-2231-10?", ALARM_E203)
    assert quote is not None
    assert "HF-2231-10 every 2000 operating hours" in quote.text


def test_table_row_is_quoted_whole() -> None:
    quote = select_quote("What is the maximum system pressure?", TECHNICAL_DATA)
    assert quote is not None
    assert quote.text == "| Maximum system pressure | 210 bar |"


def test_a_step_is_quoted_with_its_continuation_line() -> None:
    quote = select_quote("What torque for the filter bowl?", FILTER_PROCEDURE)
    assert quote is not None
    assert quote.text.startswith("5. Replace the bowl O-ring")
    assert quote.text.endswith("(torque 40 Nm).")


def test_a_line_ending_in_a_colon_takes_its_list_along() -> None:
    quote = select_quote("What are the causes?", E305_CAUSES, max_chars=400)
    assert quote is not None
    assert quote.text.startswith("Causes:\n- Oil cooler fouled")
    assert "Cooling water valve closed" in quote.text


def test_a_short_best_sentence_takes_the_next_one_along() -> None:
    chunk = "Check the relief valve. It sits on the valve block VB-1 behind the cover.\n\nOther."
    quote = select_quote("relief valve check", chunk)
    assert quote is not None
    assert quote.text == "Check the relief valve. It sits on the valve block VB-1 behind the cover."
    short = select_quote("relief valve check", chunk, max_chars=30)
    assert short is not None
    assert short.text == "Check the relief valve."


def test_a_long_sentence_is_cut_at_a_word_boundary() -> None:
    chunk = "Replace the return filter element " + "and check the housing " * 30 + "carefully."
    quote = select_quote("replace return filter", chunk, max_chars=100)
    assert quote is not None
    assert len(quote.text) <= 100
    assert chunk.startswith(quote.text)
    assert chunk[quote.end] == " ", "cut between words"
    assert quote.text[-1].isalpha()


def test_heading_ranks_below_a_sentence_with_the_same_words() -> None:
    units = split_sentences("# Replacing the return filter\n\nReplace the return filter yearly.")
    ranked = rank_sentences("replace the return filter", units)
    assert ranked[0][0].text == "Replace the return filter yearly."
    assert ranked[1][1] < ranked[0][1]


def test_identifier_boost_beats_shared_vocabulary() -> None:
    units = split_sentences(
        "Check the hydraulic pressure of the hydraulic pump. Alarm W020 is a warning."
    )
    ranked = rank_sentences("hydraulic pressure alarm W020", units)
    assert ranked[0][0].text == "Alarm W020 is a warning."


def test_similarities_align_with_the_candidates_and_can_decide() -> None:
    candidates = quote_candidates(SAFETY)
    assert [c.text[:20] for c in candidates] == [
        "Never work under the",
        "Hydraulic oil escapi",
        "Open the accumulator",
    ]
    question = "Is it dangerous?"  # no shared words: only the embeddings can tell
    quote = select_quote(question, SAFETY, [0.1, 0.8, 0.2])
    assert quote is not None
    assert quote.text.startswith("Hydraulic oil escaping")
    with pytest.raises(ValueError, match="quote_candidates"):
        select_quote(question, SAFETY, [0.1] * len(split_sentences(SAFETY)) + [0.2])


def test_candidates_drop_headings_and_fragments() -> None:
    texts = [c.text for c in quote_candidates(E305_CAUSES + "\n\n## Heading\n\nDaily")]
    assert "Causes:" in texts, "an intro is quotable: it takes its list along"
    assert "## Heading" not in texts
    assert "Daily" not in texts
    table = [c.text for c in quote_candidates(TECHNICAL_DATA)]
    assert "| Item | Value |" not in table, "a header row is a caption"
    assert "| --- | --- |" not in table
    assert "| Tank volume | 400 l |" in table


def test_nothing_to_quote() -> None:
    assert select_quote("anything", "") is None
    assert select_quote("anything", "  \n\t ") is None
    assert select_quote("anything", "## Only a heading") is None


def test_ranking_is_deterministic_and_keeps_order_on_ties() -> None:
    units = [Sentence(0, 9, "Pump runs"), Sentence(10, 19, "Fan turns")]
    assert [s.text for s, _ in rank_sentences("nothing shared", units)] == [
        "Pump runs",
        "Fan turns",
    ]


ALPHABET = st.sampled_from(
    [*"abcE2031. :-|#\n\t/", "bar ", "filter ", "E203 ", "e.g. ", "3.3 ", "- ", "1. ", "\n\n"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(ALPHABET, max_size=80).map("".join),
    st.sampled_from((*QUESTIONS, "E203 filter", "")),
    st.integers(1, 120),
)
def test_select_quote_is_always_exact(chunk: str, question: str, max_chars: int) -> None:
    quote = select_quote(question, chunk, max_chars=max_chars)
    if quote is None:
        assert quote_candidates(chunk) == []
        return
    assert chunk[quote.start : quote.end] == quote.text
    assert quote.text
    assert quote.text == quote.text.strip()
    assert len(quote.text) <= max_chars


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(CHUNKS), st.data())
def test_select_quote_with_random_similarities_is_exact(chunk: str, data: st.DataObject) -> None:
    count = len(quote_candidates(chunk))
    sims = data.draw(st.lists(st.floats(-1, 1), min_size=count, max_size=count))
    quote = select_quote(data.draw(st.sampled_from(QUESTIONS)), chunk, sims, max_chars=200)
    assert quote is not None
    assert chunk[quote.start : quote.end] == quote.text
    assert len(quote.text) <= 200
