from __future__ import annotations

import pytest

from gateway.grounding.check import (
    DEFAULT_SUPPORT_THRESHOLD,
    CheckResult,
    answer_sentences,
    check_answer,
)
from tests.grounding.samples import ALARM_E203, FILTER_PROCEDURE, SAFETY

EXCERPTS = [ALARM_E203, FILTER_PROCEDURE]


def test_a_figure_absent_from_the_excerpts_is_caught() -> None:
    result = check_answer("Screw the bowl back hand-tight, then torque to 45 Nm.", EXCERPTS)
    assert not result.grounded
    [bad] = result.unsupported
    assert bad.reason == "identifier"
    assert bad.detail == "45 nm"
    assert check_answer("Screw the bowl back hand-tight, then torque to 40 Nm.", EXCERPTS).grounded


def test_a_wrong_code_or_part_number_is_caught_even_in_a_short_sentence() -> None:
    result = check_answer("It is E230.", EXCERPTS)
    assert [(u.reason, u.detail) for u in result.unsupported] == [("identifier", "e230")]
    result = check_answer("Use part HF-2231-11.", EXCERPTS)
    assert [u.detail for u in result.unsupported] == ["hf-2231-11"]


def test_skipping_a_step_the_excerpts_require_is_caught() -> None:
    excerpts = ["Replace the return filter element HF-2231-10 every 2000 operating hours."]
    answer = "You can skip the step of replacing the return filter."
    result = check_answer(answer, excerpts)
    assert not result.grounded
    [bad] = result.unsupported
    assert bad.reason == "unsupported"
    assert "skip" in bad.detail
    # the same sentence without the negation shares the excerpt's words and passes
    assert check_answer("You must replace the return filter.", excerpts).grounded


@pytest.mark.parametrize(
    "answer",
    [
        "Do not check the old element for metal particles.",
        "Never check the old element for metal particles.",
        "You don't need to check the old element for metal particles.",
        "Replace the element without checking the old element for metal particles.",
    ],
)
def test_negations_the_excerpts_do_not_make_are_caught(answer: str) -> None:
    result = check_answer(answer, [FILTER_PROCEDURE])
    assert [u.reason for u in result.unsupported] == ["unsupported"]


def test_a_negation_the_excerpts_make_is_fine() -> None:
    answer = "Do not look for leaks with your hand; use a piece of cardboard."
    assert check_answer(answer, [SAFETY]).grounded


def test_dropping_the_excerpts_negation_is_caught() -> None:
    result = check_answer("Look for leaks with your hand.", [SAFETY])
    assert [(u.reason, u.detail) for u in result.unsupported] == [
        ("unsupported", "support 0.00; the excerpts negate it")
    ]
    # a sentence about the rest of that excerpt sentence is fine
    assert check_answer("Use a piece of cardboard to look for leaks.", [SAFETY]).grounded
    # and so is one stating the negation
    assert check_answer("Never look for leaks with your hand.", [SAFETY]).grounded


def test_a_paraphrase_of_an_excerpt_sentence_is_accepted() -> None:
    answers = [
        "The return filter element HF-2231-10 has to be replaced every 2000 operating hours.",
        "Every 2 000 hours of operation, replace the HF-2231-10 return filter element [1].",
        "Check the old element for metal particles, since bright steel or bronze particles "
        "point to pump wear.",
    ]
    for answer in answers:
        result = check_answer(answer, EXCERPTS)
        assert result.grounded, result


def test_invented_content_is_unsupported() -> None:
    result = check_answer(
        "Alarm E203 means the cooling fan is broken and the operator must call the supplier.",
        EXCERPTS,
    )
    assert not result.grounded
    assert result.unsupported[0].reason == "unsupported"
    assert result.unsupported[0].detail.startswith("support 0.")


def test_boilerplate_citations_and_references_are_not_judged() -> None:
    answer = 'See [1]. Yes. According to Excerpt 2: "Remove the locks, start the pump." [2]'
    result = check_answer(answer, EXCERPTS)
    assert result.grounded, result
    assert result.sentences == 3


def test_attribution_prefix_names_a_source_and_is_ignored() -> None:
    answer = (
        "According to press-p2-manual.md (3.3 Replacing the pressure filter element): "
        '"6. Remove the locks, start the pump, bleed the filter housing with screw B1." [2]'
    )
    assert check_answer(answer, EXCERPTS).grounded


def test_support_spans_two_adjacent_excerpt_sentences() -> None:
    answer = "The press stops when pressure stays below 160 bar; check the pump and the oil level."
    assert check_answer(answer, [ALARM_E203]).grounded


def test_every_sentence_is_judged_and_reported_with_its_own_text() -> None:
    answer = "Check the pump and the oil level. Then paint the cabinet bright purple at 12 V."
    result = check_answer(answer, EXCERPTS)
    assert result.sentences == 2
    assert [u.sentence for u in result.unsupported] == [
        "Then paint the cabinet bright purple at 12 V."
    ]


def test_similarity_rescues_a_paraphrase_with_new_words_but_not_a_negation() -> None:
    answer = "The machine halts straight away if oil pressure is insufficient."
    sentences = answer_sentences(answer)
    assert [s.text for s in sentences] == [answer]
    assert not check_answer(answer, [ALARM_E203]).grounded
    assert check_answer(answer, [ALARM_E203], similarities=[0.82]).grounded
    assert not check_answer(answer, [ALARM_E203], similarities=[0.6]).grounded
    negated = "The machine never halts if oil pressure is insufficient."
    assert not check_answer(negated, [ALARM_E203], similarities=[0.95]).grounded


def test_similarities_must_align_with_answer_sentences() -> None:
    with pytest.raises(ValueError, match="answer_sentences"):
        check_answer("One sentence here. And another one.", EXCERPTS, similarities=[0.9])


def test_answer_sentences_keep_offsets_into_the_answer() -> None:
    answer = "Check the pump [1]. Replace HF-2231-10 (Excerpt 1)."
    for sentence in answer_sentences(answer):
        assert answer[sentence.start : sentence.end] == sentence.text


def test_threshold_is_a_parameter() -> None:
    answer = "Check the pump, the oil level and the cooler fan."
    assert check_answer(answer, [ALARM_E203], support_threshold=0.5).grounded
    assert not check_answer(answer, [ALARM_E203], support_threshold=0.9).grounded
    assert DEFAULT_SUPPORT_THRESHOLD == 0.6


def test_empty_answer_and_no_excerpts() -> None:
    assert check_answer("", EXCERPTS) == CheckResult(True, (), 0)
    result = check_answer("Replace the return filter element.", [])
    assert not result.grounded


def test_a_figure_with_a_unit_needs_that_unit_in_the_excerpts() -> None:
    """A bare "45" elsewhere (a downtime, a model number) does not support "45 Nm"; the same
    number with its unit a few words later ("2000 operating hours") supports "2 000 h"."""
    excerpts = ["The HPU-45 unit was down for 45 minutes. Tighten the bowl to 40 Nm."]
    assert not check_answer("Tighten the bowl to 45 Nm.", excerpts).grounded
    assert check_answer("Tighten the bowl to 40 Nm.", excerpts).grounded
    hours = ["Replace the element every 2000 operating hours."]
    assert check_answer("Replace the element every 2 000 hours.", hours).grounded
