from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.grounding.sentences import (
    is_heading,
    is_list_item,
    is_table_row,
    is_table_rule,
    split_sentences,
)
from tests.grounding.samples import BROKER_CONFIG, CHUNKS, E305_CAUSES, TECHNICAL_DATA


def texts(text: str) -> list[str]:
    return [s.text for s in split_sentences(text)]


def test_prose_sentences_and_their_offsets() -> None:
    text = "  Check the pump.  Replace the filter!\nIs it hot? Yes. "
    units = split_sentences(text)
    assert [u.text for u in units] == [
        "Check the pump.",
        "Replace the filter!",
        "Is it hot?",
        "Yes.",
    ]
    assert all(text[u.start : u.end] == u.text for u in units)


def test_dots_that_end_nothing() -> None:
    assert texts(BROKER_CONFIG) == [
        "The broker reads /etc/mosquitto/mosquitto.conf and every file in /etc/mosquitto/conf.d"
        " at start-up, e.g. the listener settings.",
        "Set max_inflight_messages to 20 (approx. 2x the number of PLCs) and"
        " persistence_location to /var/lib/mosquitto.",
        "Version 2.0.18 listens on port 1883 by default; see Fig. 3 and No. 7 of the checklist.",
        "Restart the service with systemctl restart mosquitto.",
    ]


def test_decimals_sections_and_abbreviations() -> None:
    text = "Set the gap to 0.5 mm, i.e. Half a turn. See section 3.3. Then torque to 40 Nm."
    assert texts(text) == [
        "Set the gap to 0.5 mm, i.e. Half a turn.",
        "See section 3.3.",
        "Then torque to 40 Nm.",
    ]


def test_structure_headings_tables_lists() -> None:
    units = split_sentences(TECHNICAL_DATA)
    assert units[0].text == "## 2 Technical data"
    assert is_heading(units[0])
    assert [u.text for u in units[1:3]] == ["| Item | Value |", "| --- | --- |"]
    assert all(is_table_row(u) for u in units[1:])
    assert units[4].text == "| Maximum system pressure | 210 bar |"


def test_list_items_keep_their_markers_and_continuations() -> None:
    units = split_sentences(E305_CAUSES)
    found = [u.text for u in units]
    assert "Causes:" in found
    assert "- Cooling water valve closed (water-cooled version only)." in found
    step = next(u for u in units if u.text.startswith("1. Let the press"))
    assert is_list_item(step)
    assert step.text.endswith("(do not switch off a hot pump abruptly\n   if it can be avoided).")
    assert "2." not in found, "a list marker is never a sentence of its own"


def test_rows_of_a_commands_option_list_are_units_of_their_own() -> None:
    help_text = (
        "Options for ModBus RTU : -b #          Baudrate (1200-921600, 19200 is default)\n"
        "  -P #          Parity (none, even, odd, even is default)\n"
        "  -R [#]        RS-485 mode (/RTS on (0) after sending)\n"
        "                 Optional parameter for the GPIO RTS pin number\n"
        "Use the\n"
        "-p option to set the port."
    )
    assert texts(help_text) == [
        "Options for ModBus RTU : -b #          Baudrate (1200-921600, 19200 is default)",
        "-P #          Parity (none, even, odd, even is default)",
        "-R [#]        RS-485 mode (/RTS on (0) after sending)\n"
        "                 Optional parameter for the GPIO RTS pin number\n"
        "Use the\n-p option to set the port.",
    ], "an option row starts a unit; '-p option' wrapped inside prose (one space) does not"


def test_numbered_steps_inline() -> None:
    assert texts("1. Open valve V3. 2. Close valve V4.") == [
        "1. Open valve V3.",
        "2. Close valve V4.",
    ]


def test_heading_is_its_own_unit_even_inside_a_paragraph() -> None:
    assert texts("Intro line\n# Title\nbody text.") == ["Intro line", "# Title", "body text."]


def test_lowercase_after_a_dot_does_not_start_a_sentence() -> None:
    assert texts("Use approx. five litres of oil, cf. the table.") == [
        "Use approx. five litres of oil, cf. the table."
    ]


def test_fenced_code_lines_are_units() -> None:
    text = "Run this:\n```\nmosquitto -c /etc/mosquitto/mosquitto.conf\n```\nDone."
    assert texts(text) == [
        "Run this:",
        "```",
        "mosquitto -c /etc/mosquitto/mosquitto.conf",
        "```",
        "Done.",
    ]


def test_setext_headings_and_table_rules() -> None:
    units = split_sentences("Robot R1 - Notes\n================\nThe gripper has 4 cups.\n")
    assert [u.text for u in units] == [
        "Robot R1 - Notes\n================",
        "The gripper has 4 cups.",
    ]
    assert is_heading(units[0])
    assert not is_heading(units[1])
    rows = split_sentences(TECHNICAL_DATA)
    assert [is_table_rule(u) for u in rows[1:4]] == [False, True, False]


def test_blank_text() -> None:
    assert split_sentences("") == []
    assert split_sentences(" \n\n\t ") == []


FRAGMENTS = [
    "Check the pump.", "e.g.", "i.e. the", "approx.", "No. 5", "Fig. 3", "3.3", "0.5 bar",
    "/etc/mosquitto/conf.d", "mosquitto.conf", "log.level", "1. Open valve V3.", "- item",
    "# Heading", "| a | b |", "| --- |", "```", "?", "!", "...", "\"Quoted.\"", "(x.)", "A.",
    "2)", "a)", "\n", "\n\n", " ", "\t", "Ende.", "E203", "\r\n", "\u2022 bullet", ".", "x",
]  # fmt: skip


@st.composite
def manual_text(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=12), max_size=25))
    separators = draw(
        st.lists(
            st.sampled_from(["", " ", "\n", "  ", "\n\n"]), min_size=len(parts), max_size=len(parts)
        )
    )
    return "".join(p + s for p, s in zip(parts, separators, strict=True))


@settings(max_examples=400, deadline=None)
@given(manual_text())
def test_spans_are_exact_ordered_trimmed_and_cover_the_text(text: str) -> None:
    units = split_sentences(text)
    previous_end = 0
    for unit in units:
        assert text[unit.start : unit.end] == unit.text
        assert unit.text
        assert unit.text == unit.text.strip()
        assert unit.start >= previous_end
        previous_end = unit.end
    covered = "".join(u.text for u in units)
    assert "".join(covered.split()) == "".join(text.split())


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(CHUNKS), st.integers(0, 40), st.integers(0, 40))
def test_real_chunks_cut_anywhere_keep_the_invariants(chunk: str, head: int, tail: int) -> None:
    text = chunk[head : len(chunk) - tail]
    units = split_sentences(text)
    assert all(text[u.start : u.end] == u.text and u.text for u in units)
    assert all(a.end <= b.start for a, b in itertools.pairwise(units))
