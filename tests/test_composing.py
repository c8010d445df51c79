"""The gate every generated sentence passes (gateway/questions/composing.py), on planted model
output: what is published, what is caught, where a loop ends it."""

from __future__ import annotations

from gateway.grounding import Quote
from gateway.grounding.answer_type import expectation, kinds_in, type_bonus
from gateway.questions.composing import (
    SentenceGate,
    choose_quotes,
    prompt_excerpts,
    quote_order,
    rank_all,
)

EXCERPTS = [
    "Replace the return filter element HF-2231-B every 2 000 operating hours. Tighten the "
    "filter bowl to 40 Nm. Never open the filter housing while the pump is running.",
    "Alarm E203 means the system pressure stayed below 160 bar for more than 2 seconds.",
]


def feed_in_pieces(gate: SentenceGate, text: str, size: int = 7) -> None:
    for start in range(0, len(text), size):
        gate.feed(text[start : start + size])
    gate.finish()


def test_supported_sentences_pass_and_are_emitted_whole() -> None:
    emitted: list[str] = []
    gate = SentenceGate(EXCERPTS, checked=True, support_threshold=0.6, emit=emitted.append)
    feed_in_pieces(gate, "Tighten the filter bowl to 40 Nm [1]. E203 means pressure below 160 bar.")
    assert gate.supported_count == 2
    assert gate.unsupported == []
    assert emitted == [
        "Tighten the filter bowl to 40 Nm [1]. ",
        "E203 means pressure below 160 bar. ",
    ]
    assert "".join(emitted).strip() == gate.text


def test_an_unsupported_figure_is_caught_and_not_published() -> None:
    emitted: list[str] = []
    gate = SentenceGate(EXCERPTS, checked=True, support_threshold=0.6, emit=emitted.append)
    feed_in_pieces(gate, "Tighten the filter bowl to 45 Nm. Replace the element every 2 000 hours.")
    assert [u.reason for u in gate.unsupported] == ["identifier"]
    assert "45 Nm" in gate.unsupported[0].sentence
    assert "45" not in gate.text
    assert emitted == ["Replace the element every 2 000 hours. "]


def test_an_invented_instruction_is_caught() -> None:
    gate = SentenceGate(EXCERPTS, checked=True, support_threshold=0.6)
    feed_in_pieces(gate, "You can skip the step of replacing the return filter.")
    assert len(gate.unsupported) == 1
    assert gate.supported_count == 0
    assert gate.text == ""


def test_generative_mode_publishes_but_records_what_failed() -> None:
    emitted: list[str] = []
    gate = SentenceGate(EXCERPTS, checked=False, support_threshold=0.6, emit=emitted.append)
    feed_in_pieces(gate, "Tighten the filter bowl to 45 Nm.")
    assert len(gate.unsupported) == 1
    assert gate.text == "Tighten the filter bowl to 45 Nm."
    assert emitted == ["Tighten the filter bowl to 45 Nm. "]


def test_a_loop_ends_the_answer_and_the_repeat_is_never_emitted() -> None:
    emitted: list[str] = []
    gate = SentenceGate(EXCERPTS, checked=False, support_threshold=0.6, emit=emitted.append)
    loop = "Replace the return filter element every 2 000 hours. " * 5
    feed_in_pieces(gate, loop + "Tighten the bowl to 40 Nm.")
    assert gate.stopped_loop
    assert emitted == ["Replace the return filter element every 2 000 hours. "]
    assert gate.text == "Replace the return filter element every 2 000 hours."


def test_boilerplate_waits_for_a_supported_sentence() -> None:
    emitted: list[str] = []
    gate = SentenceGate(EXCERPTS, checked=True, support_threshold=0.6, emit=emitted.append)
    feed_in_pieces(gate, "See [1]. Tighten the filter bowl to 40 Nm.")
    assert emitted == ["See [1]. ", "Tighten the filter bowl to 40 Nm. "]
    nothing: list[str] = []
    alone = SentenceGate(EXCERPTS, checked=True, support_threshold=0.6, emit=nothing.append)
    feed_in_pieces(alone, "See [1].")
    assert nothing == []
    assert alone.text == ""


def test_prompt_excerpts_keep_the_best_sentences_within_the_budget() -> None:
    question = "What torque for the filter bowl?"
    ranked = rank_all(question, EXCERPTS, None)
    tight = prompt_excerpts(ranked, len(EXCERPTS), budget_tokens=12)
    assert tight[0] == "Tighten the filter bowl to 40 Nm."
    assert tight[1] == ""
    wide = prompt_excerpts(ranked, len(EXCERPTS), budget_tokens=10_000)
    assert wide == EXCERPTS  # everything fits: every sentence, in document order


def test_a_question_asking_for_a_figure_prefers_the_sentence_with_it() -> None:
    expected = expectation("How often is the database saved if I leave the interval alone?")
    assert expected.number
    assert expected.default
    definition = "The number of seconds between saves of the in-memory database."
    value = "Defaults to 1800 seconds."
    assert type_bonus(expected, value) > type_bonus(expected, definition)
    plain = expectation("Why does the belt slip?")
    assert type_bonus(plain, value) == 0.0


def test_quote_order_lets_the_answering_quote_lead() -> None:
    quotes = [
        Quote("The press has a clean hydraulic system.", 0, 39, 0.9),
        None,
        Quote("Tighten the bowl to 40 Nm.", 0, 26, 0.2),
    ]
    order = quote_order("What torque for the bowl?", [0.60, 0.70, 0.58], quotes)
    assert order == [2, 0]


def test_a_quote_without_the_asked_figure_reaches_for_the_next_sentence_that_has_it() -> None:
    chunk = (
        "The number of QoS 1 and 2 messages to hold in the queue per client above those in "
        "flight. Messages past it are dropped silently. Defaults to 1000. Set to 0 for no "
        "maximum."
    )
    question = "How many QoS 1 and 2 messages will the broker queue for a client?"
    (quote,) = choose_quotes(question, [chunk], None, max_chars=400)
    assert quote is not None
    assert quote.text == chunk[quote.start : quote.end]
    assert "Defaults to 1000." in quote.text
    (short,) = choose_quotes(question, [chunk], None, max_chars=60)
    assert short is not None
    assert "1000" not in short.text  # the value is beyond max_chars: the quote stays as chosen


def test_a_quote_without_the_asked_default_takes_the_sentence_before_it_that_has_it() -> None:
    chunk = (
        "Set the maximal allowed temperature in Celsius. Once this temperature is reached the "
        "system is stopped. Default value is 90 C. Watchdog will issue warnings once the "
        "temperature increases 90%, 95% and 98% of this temperature."
    )
    question = "At what temperature does the watchdog daemon warn if max-temperature is not set?"
    (quote,) = choose_quotes(question, [chunk], None, max_chars=400)
    assert quote is not None
    assert quote.text == chunk[quote.start : quote.end]
    assert quote.text.startswith("Default value is 90 C.")
    assert quote.text.endswith("98% of this temperature.")


def test_a_where_question_completes_its_quote_with_the_path() -> None:
    chunk = (
        "Set the log directory to capture the standard output and standard error from "
        "repair-binary and test-binary execution. Default is '/var/log/watchdog'."
    )
    question = "Where can I find the output of our repair and test scripts?"
    assert expectation(question).place
    (quote,) = choose_quotes(question, [chunk], None, max_chars=400)
    assert quote is not None
    assert quote.text.endswith("Default is '/var/log/watchdog'.")


def test_the_digits_of_a_code_are_not_the_figure_a_question_asks_for() -> None:
    expected = expectation(
        "How long does the transfer sensor stay blocked before C3 reports a jam?"
    )
    assert kinds_in(expected, "Lock out C3 and clean the lens of B31.") == frozenset()
    assert kinds_in(expected, "Sensor B31 has been covered for more than 5 seconds.") == {"number"}
    assert kinds_in(expected, "5. Put your tag on Q31.") == frozenset(), "a step number"
    chunk = (
        "Sensor B31 has been covered for more than 5 seconds. Lock out C3, remove the jammed "
        "part, clean the lens of B31 and check its alignment with the reflector."
    )
    (quote,) = choose_quotes(
        "How long does the transfer sensor stay blocked before C3 reports a jam?",
        [chunk],
        None,
        max_chars=400,
    )
    assert quote is not None
    assert "5 seconds" in quote.text


def test_a_default_stated_as_if_nothing_is_given_counts_as_a_default() -> None:
    expected = expectation("Which shutdown type is used if neither sdtype nor advorder is set?")
    assert expected.default
    assert "default" in kinds_in(expected, "If nothing is provided, NUT will assume sdtype=0.")


def test_what_does_alarm_mean_asks_for_a_meaning_not_a_name() -> None:
    assert not expectation("What does alarm E203 on press P2 mean?").name
    assert expectation("Which isolator do I lock out before working on the C3 belt?").name
    assert expectation("What oil goes into the P2 tank?").name
