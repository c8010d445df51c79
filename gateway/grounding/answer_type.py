"""What kind of answer a question expects, and whether a sentence is of that kind.

Manuals and man pages define a setting in one sentence and give its value in the next ("The
number of seconds between saves. Defaults to 1800 seconds."): the defining sentence shares the
question's words, the one with the fact does not. A question that asks "how long", "which port",
"where" or "by default" says what its answer looks like; a sentence holding a number, a default
("Defaults to", "If not given, ..."), a setting name or a path of that kind gets a bonus.
Plain patterns over English; no model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

_NUMBER_QUESTION = re.compile(
    r"\b(how\s+(long|often|many|much|far|big|high|low|large|small|fast|old|wide|deep|heavy|hot"
    r"|cold|frequently)|what\s+(port|size|value|pressure|temperature|torque|voltage|current|"
    r"speed|level|interval|timeout|limit|length|number|percentage|rate|age|capacity|range|"
    r"distance|weight|amount|frequency|delay|period|time|date|year)|which\s+(port|size|value|"
    r"number|year|date)|at\s+what|after\s+how|shortest|longest|maximum|minimum|highest|lowest|"
    r"smallest|largest|most|least|up\s+to|every\s+how|when\s+(was|were|did))\b",
    re.IGNORECASE,
)
_DEFAULT_QUESTION = re.compile(
    r"\b(default|by\s+default|out\s+of\s+the\s+box|leave\s+(\w+\s+){1,3}alone|leave\s+it|unset|"
    r"not\s+set|never\s+(set|told|gave|give|configured)|without\s+(setting|specifying|any|"
    r"configuring|telling)|(don't|do\s+not|didn't|did\s+not)\s+(set|add|give|configure|specify|"
    r"change|tell|say|touch)|if\s+i\s+(don't|do\s+not)|no\s+\w+\s+(is\s+)?(given|set|configured)|"
    r"neither\b[^?.]*\bnor\b[^?.]*\b(is|are)\s+(set|given|specified|configured))\b",
    re.IGNORECASE,
)
_NAME_QUESTION = re.compile(
    # "which oil", "what torque setting", not "what does alarm E203 mean" (a verb in between)
    r"\b(which|what)\s+(?!(?:does|do|did|is|are|was|were|can|should|will)\b)(\w+\s+)?"
    r"(directive|option|setting|parameter|keyword|command|program|file|signal|variable|flag|switch|entry|line|statement|part\s+number|tool|isolator|valve|"
    r"breaker|sensor|fuse|code|alarm|menu|screw|spanner|oil|driver|service|mode|value)\b",
    re.IGNORECASE,
)
_STEP_MARKER = re.compile(
    r"^[ \t]*\(?\d{1,3}[.)][ \t]", re.MULTILINE
)  # "5. Put your tag on": no figure
_PLACE_QUESTION = re.compile(
    r"\b(where|(which|what)\s+(\w+\s+)?(file|directory|folder|path|location))\b", re.IGNORECASE
)
_NUMBER = re.compile(r"(?<![\w.-])\d+(?:[.,]\d+)*")  # not the 31 of B31: a code is a name
_DEFAULT = re.compile(
    r"\bdefault|\b(if|when)\s+(nothing|none|not|omitted|unset|absent)\b|\bunless\s+(set|given)",
    re.IGNORECASE,
)
_PATH = re.compile(r"(?<![\w/<])(?:~|\.{0,2})/[\w.-]+(?:/[\w.*-]+)*/?")
_NAME = re.compile(
    r"\b[a-z]+_[a-z0-9_]+\b|\b[A-Z][A-Z0-9]{1,}(?:[-_][A-Z0-9]+)+\b|\b[A-Z]{3,}\d*\b|"
    r"(?<![\w/])/[\w.-]+/[\w./-]+|--?[a-z][\w-]+|\b[A-Z]+-?\d+[A-Z0-9-]*\b"
)

NUMBER_BONUS = 0.5
DEFAULT_BONUS = 0.4
NAME_BONUS = 0.3
PLACE_BONUS = 0.4


@dataclass(frozen=True, slots=True)
class Expectation:
    number: bool
    default: bool
    name: bool
    place: bool = False
    """A file, directory or path ("where does it keep...", "which file")."""
    given_numbers: frozenset[str] = frozenset()
    """Numbers the question itself names ("QoS 1", "P2"): not an answer when a sentence repeats
    them."""


def expectation(question: str) -> Expectation:
    return Expectation(
        number=bool(_NUMBER_QUESTION.search(question)),
        default=bool(_DEFAULT_QUESTION.search(question)),
        name=bool(_NAME_QUESTION.search(question)),
        place=bool(_PLACE_QUESTION.search(question)),
        given_numbers=frozenset(_NUMBER.findall(question)),
    )


Kind = Literal["number", "default", "name", "place"]
_BONUS: dict[Kind, float] = {
    "number": NUMBER_BONUS,
    "default": DEFAULT_BONUS,
    "name": NAME_BONUS,
    "place": PLACE_BONUS,
}


def expected_kinds(expected: Expectation) -> frozenset[Kind]:
    wanted: set[Kind] = set()
    if expected.number:
        wanted.add("number")
    if expected.default:
        wanted.add("default")
    if expected.name:
        wanted.add("name")
    if expected.place:
        wanted.add("place")
    return frozenset(wanted)


def kinds_in(expected: Expectation, sentence: str) -> frozenset[Kind]:
    """The kinds of answer the question asks for that `sentence` holds."""
    found: set[Kind] = set()
    figures = _NUMBER.findall(_STEP_MARKER.sub("", sentence))
    if expected.number and any(n not in expected.given_numbers for n in figures):
        found.add("number")
    if expected.default and _DEFAULT.search(sentence):
        found.add("default")
    if expected.name and _NAME.search(sentence):
        found.add("name")
    if expected.place and _PATH.search(sentence):
        found.add("place")
    return frozenset(found)


def type_bonus(expected: Expectation, sentence: str) -> float:
    """0 when the question expects nothing in particular or the sentence has none of it."""
    return sum(_BONUS[kind] for kind in kinds_in(expected, sentence))


_CODE = re.compile(r"(?<![\w-])(([A-Za-z]{1,4}-?\d{1,5})(?:[-.][A-Za-z0-9]+)*)(?![\w-])")


def codes(question: str) -> list[str]:
    """Equipment and alarm codes a question names: P2, E203, TT-101, HF-2231-B (letters then
    digits). Sizes and units such as "32-bit" or "10mm" start with digits and are not codes."""
    return list(dict.fromkeys(m.group(1) for m in _CODE.finditer(question)))


def _core(code: str) -> str:
    """HF-2231-B -> HF-2231, RJ45-to-DB9 -> RJ45: enough to tell P9 from P2."""
    match = _CODE.fullmatch(code)
    return match.group(2) if match else code


def unknown_codes(question: str, texts: Sequence[str]) -> list[str]:
    """The question's codes that none of `texts` mentions (case-insensitive, whole token).

    A question about press P9 retrieves press P2's manual with a high similarity (embeddings
    hardly see one digit); if no retrieved excerpt names P9, the honest answer is the fallback.
    """
    haystack = "\n".join(texts)
    return [
        code
        for code in codes(question)
        if not re.search(
            rf"(?<![A-Za-z0-9]){re.escape(_core(code))}(?![A-Za-z0-9])", haystack, re.I
        )
    ]


_PROPER_NAME = re.compile(
    r"(?<![\w.-])([A-Z][A-Za-z0-9]*[A-Z][A-Za-z0-9]*|[A-Z]{3,}|(?<=[a-z,] )[A-Z][a-z]{2,})(?!\w)"
)


def names(question: str) -> list[str]:
    """Product and proper names a question uses: acronyms (NATS, VPN), CamelCase (PostgreSQL)
    and capitalised words inside the sentence (Graylog), not its first word."""
    return list(dict.fromkeys(m.group(1) for m in _PROPER_NAME.finditer(question)))


def unknown_names(question: str, texts: Sequence[str]) -> list[str]:
    """The question's names that none of `texts` mentions. Weak evidence on its own (a
    technician's "our PLC" is context, not the subject), so the caller combines it with a low
    similarity: a question about NATS that only found mosquitto's manual at 0.36."""
    haystack = "\n".join(texts)
    return [
        name
        for name in names(question)
        if not re.search(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", haystack, re.I)
    ]
