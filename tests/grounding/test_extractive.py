from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.grounding.check import check_answer
from gateway.grounding.extractive import extractive_answer
from gateway.grounding.quotes import Quote, select_quote
from tests.grounding.samples import ALARM_E203, CHUNKS, FILTER_PROCEDURE, QUESTIONS


def quote_of(question: str, chunk: str, max_chars: int = 400) -> Quote:
    quote = select_quote(question, chunk, max_chars=max_chars)
    assert quote is not None
    return quote


def test_format_attribution_quote_citation() -> None:
    quote = quote_of("What torque for the filter bowl?", FILTER_PROCEDURE)
    answer = extractive_answer([(1, "press-p2-manual.md, 3.3 Filter element", quote)])
    assert answer == (
        'According to press-p2-manual.md (3.3 Filter element): "5. Replace the bowl O-ring '
        "OR-85x3 (included in the filter kit), fit the new element, screw the\nbowl back "
        'hand-tight plus a quarter turn (torque 40 Nm)." [1]'
    )


def test_second_quote_only_when_it_adds_information() -> None:
    first = quote_of("What does alarm E203 mean?", ALARM_E203)
    same = Quote(first.text, first.start, first.end, 0.5)
    other = quote_of("Which spanner do I need?", FILTER_PROCEDURE)
    assert extractive_answer([(1, "a.md", first), (2, "b.md", same)]).count("According") == 1
    both = extractive_answer([(1, "a.md", first), (3, "b.md, 3.3", other)])
    assert both.count("According") == 2
    assert both.endswith("[3]")
    assert "According to b.md (3.3):" in both


def test_max_quotes_and_max_chars() -> None:
    quotes = [
        (i + 1, f"doc{i}.md", quote_of(q, c))
        for i, (q, c) in enumerate(zip(QUESTIONS, CHUNKS, strict=False))
    ]
    assert extractive_answer(quotes, max_quotes=1).count("According") == 1
    for limit in (120, 200, 600):
        assert len(extractive_answer(quotes, max_chars=limit)) <= limit
    short = extractive_answer(quotes, max_chars=120)
    assert short.endswith('\u2026" [1]') or len(short) <= 120
    assert extractive_answer(quotes, max_chars=30) == ""
    assert extractive_answer([]) == ""


def test_long_label_is_shortened_and_cleaned() -> None:
    quote = quote_of("What does alarm E203 mean?", ALARM_E203)
    answer = extractive_answer([(1, 'x.md, E203: "low" [pressure]' + "y" * 300, quote)])
    label = answer.split(': "', 1)[0]
    assert len(label) <= len("According to ") + 120
    assert '"' not in label
    assert "[" not in label
    assert check_answer(answer, [quote.text]).grounded


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(QUESTIONS), st.sampled_from(CHUNKS), st.integers(20, 400)),
        min_size=1,
        max_size=3,
    ),
    st.integers(60, 800),
    st.sampled_from(["press-p2-manual.md, 3.3 Filter element", "notes.txt", "a, b, c", "3.3. X"]),
)
def test_every_sentence_of_an_extractive_answer_passes_the_check(
    picks: list[tuple[str, str, int]], max_chars: int, label: str
) -> None:
    quotes = [(n + 1, label, quote_of(q, c, m)) for n, (q, c, m) in enumerate(picks)]
    answer = extractive_answer(quotes, max_chars=max_chars)
    assert len(answer) <= max_chars
    result = check_answer(answer, [quote.text for _, _, quote in quotes])
    assert result.grounded, (answer, result)
