from __future__ import annotations

import pytest

from gateway.grounding.terms import content_words, fact_index, identifiers, supports


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("210 bar", {"210 bar"}),
        ("210bar", {"210 bar"}),
        ("after 60 s", {"60 s"}),
        ("wait 60 seconds", {"60 s"}),
        ("a 0.5 mm gap", {"0.5 mm"}),
        ("a 0,5 mm gap", {"0.5 mm"}),
        ("24 V supply", {"24 v"}),
        ("24V supply", {"24 v"}),
        ("port 1883", {"1883"}),
        ("every 2,000 h", {"2000 h"}),
        ("every 2 000 hours", {"2000 h"}),
        ("torque 40 Nm.", {"40 nm"}),
        ("35-55 °C", {"35 °c", "55 °c"}),
        ("4-20 mA signal", {"4 ma", "20 ma"}),
        ("alarm E203 on P2", {"e203", "p2"}),
        ("codes C-40, W020 and TT-101.", {"c-40", "w020", "tt-101"}),
        ("element HF-2231-10", {"hf-2231-10"}),
        ("P/N 4471-22", {"4471-22"}),
        ("serial 2231-0187", {"2231-0187"}),
        ("see /var/lib/mosquitto/", {"/var/lib/mosquitto"}),
        ("edit mosquitto.conf now", {"mosquitto.conf"}),
        ("set max_inflight_messages", {"max_inflight_messages"}),
        ("set log.level to debug", {"log.level"}),
        ("model all-minilm-l6-v2", {"all-minilm-l6-v2"}),
        ("run with --log-level", {"--log-level"}),
        ("option keepAlive or MaxInflight", {"keepalive", "maxinflight"}),
        ("version 1.2.3", {"1.2.3"}),
        ("class 17/15/12", {"17/15/12"}),
        ("the 1st step", set()),
        ("Replace the filter, e.g. the PLCs in kW and a 5 a day.", {"5"}),
    ],
)
def test_identifiers(text: str, expected: set[str]) -> None:
    assert identifiers(text) == expected


def test_plain_prose_has_no_identifiers() -> None:
    assert (
        identifiers("Check the E-stop button and the hydraulic pump, and/or the cooler.") == set()
    )


def test_same_fact_written_two_ways_is_supported() -> None:
    index = fact_index(["Normal working pressure 180-200 bar; relief valve at 225bar."])
    assert supports(index, "180 bar")
    assert supports(index, "225 bar")
    assert supports(index, "225")  # a bare number is backed by the number with its unit
    assert not supports(index, "225 nm")  # but never by another unit
    assert not supports(index, "230 bar")


def test_content_words_stem_and_drop_stop_words() -> None:
    assert content_words("Replacing the filters") == content_words("replace filter")
    assert content_words("The valve was checked.") == ["valv", "check"]
    assert content_words("stopped, stopping, stops") == ["stop", "stop", "stop"]
    assert content_words("It is not in 2000 h") == []
