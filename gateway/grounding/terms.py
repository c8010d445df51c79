"""Hard facts and content words: what a wrong answer gets wrong, and what an answer talks about.

A tiny model paraphrases well enough but invents figures: "torque 45 Nm" where the manual says
40 Nm, alarm E230 for E203, a part number one digit off. Those facts are compared exactly, as
`identifiers`: numbers with their unit, alarm and fault codes, part numbers, paths, file names
and option names, normalised so that one fact written two ways compares equal ("210bar" and
"210 bar", "2,000 h" and "2 000 hours"). Everything else is compared loosely, as `content_words`:
lowercase words minus stop words, lightly stemmed so "replacing filters" meets "replace filter".

Bare numbers are lenient on purpose: "180-200 bar" gives 180 bar and 200 bar, and an answer's
"210" is supported by an excerpt's "210 bar" (and the other way round), but 40 bar never supports
40 Nm.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_UNIT_ALIASES = {
    "hour": "h", "hours": "h", "hr": "h", "hrs": "h", "sec": "s", "secs": "s", "second": "s",
    "seconds": "s", "minute": "min", "minutes": "min", "mins": "min", "um": "µm",
    "micron": "µm", "microns": "µm", "percent": "%", "litre": "l", "litres": "l", "liter": "l",
    "liters": "l", "volt": "v", "volts": "v", "vdc": "v dc", "vac": "v ac", "tonne": "t",
    "tonnes": "t", "degc": "°c", "deg": "°", "mm2": "mm²", "kilowatt": "kw", "kilowatts": "kw",
}  # fmt: skip
_UNITS = frozenset(
    {
        "bar", "mbar", "psi", "pa", "kpa", "mpa", "nm", "kn", "n", "kw", "w", "mw", "v", "kv",
        "mv", "a", "ma", "ah", "kwh", "hz", "khz", "mhz", "rpm", "s", "ms", "µs", "us", "min",
        "h", "mm", "cm", "m", "km", "µm", "l", "ml", "°c", "°f", "°", "%", "kg", "g", "t",
        "mm²", "l/min", "m/s", "mm/s", "db", "ppm", "kb", "mb", "gb", "kib", "mib", "gib", "ω",
        "kω", "nf", "µf", "bpm", "lux", "gpm", "ft", "lb", "lbs", "ftlb",
    }
    | set(_UNIT_ALIASES)
)  # fmt: skip
_FILE_EXTENSIONS = (
    "conf|cfg|ini|yaml|yml|json|toml|xml|txt|md|csv|log|py|sh|service|socket|timer|db|sqlite3?"
    "|pdf|html?|gguf|bin|img|pem|crt|key|rules|env|tar|gz|tgz|zip|so|jsonl|nc|plc|acl|pwd|bak"
)
_NUMBER = r"\d+(?:[.,]\d+)*"
_NUMBER_ONLY = re.compile(_NUMBER)
_NUMBER_UNIT = re.compile(rf"({_NUMBER})([^\W\d_]+[²³]?(?:/[a-z]+)?|°[CF]|%|Ω)", re.IGNORECASE)
_RANGE = re.compile(rf"({_NUMBER}(?:[-\u2013]{_NUMBER})+)([^\W\d_]+|°[CF]|%)?", re.IGNORECASE)
_FILE = re.compile(rf"[\w.-]*\w\.(?:{_FILE_EXTENSIONS})", re.IGNORECASE)
_CODE = re.compile(r"[A-Za-z0-9]+(?:[-_:/.][A-Za-z0-9]+)*")
_SNAKE = re.compile(r"_*[A-Za-z][A-Za-z0-9]*(?:_+[A-Za-z0-9]+)+_*")
_DOTTED = re.compile(r"[a-z_][a-z0-9_]+(?:\.[a-z_][a-z0-9_]+)+")
_FLAG = re.compile(r"--[A-Za-z0-9][\w-]*")
_ORDINAL = re.compile(r"\d+(?:st|nd|rd|th)", re.IGNORECASE)
_PLURAL_ACRONYM = re.compile(r"[A-Z]{2,}s")
# A token ends at whitespace, brackets, quotes, an ellipsis (\u2026), table bars and emphasis.
_TOKEN = re.compile(r"[^\s()\[\]{}<>\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb\u2026|*]+")
_TRAILING = ".,;:!?"
_LEADING = ",;:!?"


@dataclass(frozen=True, slots=True)
class FactIndex:
    """The identifiers of some texts, prepared for lenient look-ups (see `supports`)."""

    identifiers: frozenset[str]
    numbers: frozenset[str]  # the number part of every numeric identifier, bare or with a unit
    bare_numbers: frozenset[str]  # numbers written without a unit
    tokens: frozenset[str]  # every lowercase token as written, the last resort
    near_units: frozenset[str] = frozenset()
    """"2000 h" for "2000 operating hours": a bare number with a unit a few words after it."""


def identifiers(text: str) -> set[str]:
    """The normalised hard facts of `text` (lowercase; a number and its unit one space apart)."""
    found: set[str] = set()
    tokens = [_clean(m.group()) for m in _TOKEN.finditer(text)]
    tokens = [piece for token in tokens for piece in re.split(r",(?!\d)", token) if piece]
    index = 0
    while index < len(tokens):
        facts, used = _classify(tokens, index)
        found.update(facts)
        index += used
    return found


def fact_index(texts: Iterable[str]) -> FactIndex:
    """Index the identifiers of `texts` for `supports`."""
    ids: set[str] = set()
    tokens: set[str] = set()
    near: set[str] = set()
    for text in texts:
        ids |= identifiers(text)
        words = [_clean(m.group()) for m in _TOKEN.finditer(text)]
        tokens.update(w.lower() for w in words)
        near |= _numbers_near_units(words)
    numbers = {i.split(" ", 1)[0] for i in ids if _is_number(i.split(" ", 1)[0])}
    bare = {i for i in ids if _is_number(i)}
    return FactIndex(
        frozenset(ids), frozenset(numbers), frozenset(bare), frozenset(tokens), frozenset(near)
    )


NEAR_UNIT_WORDS = 3


def _numbers_near_units(words: list[str]) -> set[str]:
    """Walk the tokens as `identifiers` does (so "2 000" is one number); for every bare number,
    the first unit among the next NEAR_UNIT_WORDS tokens."""
    words = [piece for word in words for piece in re.split(r",(?!\d)", word) if piece]
    found: set[str] = set()
    index = 0
    while index < len(words):
        facts, used = _classify(words, index)
        for fact in facts:
            if _is_number(fact):
                for following in words[index + used : index + used + NEAR_UNIT_WORDS]:
                    unit = _unit(following)
                    if unit is not None:
                        found.add(f"{fact} {unit}")
                        break
        index += max(used, 1)
    return found


def supports(index: FactIndex, identifier: str) -> bool:
    """Whether the indexed texts state `identifier` (numbers leniently, see the module doc)."""
    if identifier in index.identifiers or identifier in index.tokens:
        return True
    number, _, unit = identifier.partition(" ")
    if not _is_number(number):
        return False
    if unit:
        # A figure with its unit is the fact a technician acts on: "45 Nm" is not supported by
        # a "45" that stands elsewhere in the excerpts (a downtime, a model number), only by
        # the same unit right after it ("2000 operating hours" for "2 000 h").
        return identifier in index.near_units
    return number in index.numbers


def missing_identifiers(text: str, index: FactIndex) -> list[str]:
    """The identifiers of `text` that the indexed texts do not state, sorted."""
    return sorted(i for i in identifiers(text) if not supports(index, i))


def _is_number(text: str) -> bool:
    return _NUMBER_ONLY.fullmatch(text) is not None


def _clean(token: str) -> str:
    token = token.rstrip(_TRAILING).lstrip(_LEADING)
    if token.startswith("-") and not token.startswith("--"):
        token = token.lstrip("-\u2013")
    return token


def _classify(tokens: list[str], index: int) -> tuple[set[str], int]:
    """The facts of tokens[index] (and of a unit or thousands group after it): (facts, used)."""
    token = tokens[index]
    if token[:1].isdigit() and not _is_path(token):
        return _numeric(tokens, index)
    named = (
        _FLAG.fullmatch(token)
        or _is_path(token)
        or _FILE.fullmatch(token)
        or _SNAKE.fullmatch(token)
        or _DOTTED.fullmatch(token)
        or _is_code(token)
        or _is_camel(token)
    )
    return ({token.lower().rstrip("/") or "/"} if named else set()), 1


def _is_path(token: str) -> bool:
    """/var/lib/mosquitto, ~/kb, ./run.sh, configs/gateway.toml (not "P/N" or "and/or")."""
    if "/" not in token or len(token) < 2:
        return False
    return token.startswith(("/", "~/", "./", "../")) or _FILE.fullmatch(token) is not None


def _numeric(tokens: list[str], index: int) -> tuple[set[str], int]:
    """Facts of a token starting with a digit: a number (with the unit after it), a range,
    a version, a part or serial number, a code."""
    token = tokens[index]
    if _NUMBER_ONLY.fullmatch(token) and token.count(".") < 2:
        return _number(tokens, index)
    attached = _NUMBER_UNIT.fullmatch(token)
    if attached and (unit := _unit(attached.group(2))) is not None:
        return {f"{_normalise_number(attached.group(1))} {unit}"}, 1
    ranged = _RANGE.fullmatch(token)
    if ranged and not re.match(r"\d{4}", token):  # 4471-22, 2231-0187: part/serial numbers
        return _range(tokens, index, ranged)
    named = not _ORDINAL.fullmatch(token) and (
        _NUMBER_ONLY.fullmatch(token)  # a version or section number: 1.2.3
        or ranged
        or _is_code(token)
        or re.fullmatch(r"\d+(?:[/:]\d+)+", token)  # 17/15/12, 08:30
    )
    return ({token.lower()} if named else set()), 1


def _number(tokens: list[str], index: int) -> tuple[set[str], int]:
    """A plain number, joined with a space-separated thousands group ("2 000") and followed by
    its unit when the next token is one."""
    token = tokens[index]
    used = 1
    while (
        "." not in token
        and "," not in token
        and len(token) <= 3
        and index + used < len(tokens)
        and re.fullmatch(r"\d{3}", tokens[index + used])
    ):
        token += tokens[index + used]
        used += 1
    unit = _unit(tokens[index + used]) if index + used < len(tokens) else None
    number = _normalise_number(token)
    if unit is None:
        return {number}, used
    return {f"{number} {unit}"}, used + 1


def _range(tokens: list[str], index: int, ranged: re.Match[str]) -> tuple[set[str], int]:
    """180-200 bar: both ends, each with the unit (attached or the next token)."""
    used = 1
    suffix = ranged.group(2)
    unit = _unit(suffix) if suffix else None
    if suffix is None and index + 1 < len(tokens):
        unit = _unit(tokens[index + 1])
        used += unit is not None
    numbers = [_normalise_number(p) for p in re.split(r"[-\u2013]", ranged.group(1))]
    return {f"{n} {unit}" if unit else n for n in numbers}, used


def _unit(raw: str) -> str | None:
    """The normalised unit `raw` spells, or None. A lone "a" is an article, "A" is amperes."""
    if raw == "a":
        return None
    lower = raw.lower()
    if lower not in _UNITS:
        return None
    return _UNIT_ALIASES.get(lower, lower)


def _normalise_number(raw: str) -> str:
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+", raw):
        raw = raw.replace(",", "")
    raw = raw.replace(",", ".")
    if raw.count(".") > 1:
        return raw
    whole, _, fraction = raw.partition(".")
    whole = whole.lstrip("0") or "0"
    fraction = fraction.rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


def _is_code(token: str) -> bool:
    """E203, C-40, TT-101, HF-2231-10, OR-85x3, X3:1, all-minilm-l6-v2: letters and digits."""
    if not _CODE.fullmatch(token):
        return False
    return any(c.isdigit() for c in token) and any(c.isalpha() for c in token)


def _is_camel(token: str) -> bool:
    """CamelCase or lowerCamel option names (MaxInflight, keepAlive); not PLCs or kW."""
    if not token.isalnum() or not token.isascii() or _PLURAL_ACRONYM.fullmatch(token):
        return False
    if token.lower() in _UNITS:
        return False
    return any(c.islower() for c in token) and any(c.isupper() for c in token[1:])


# --- content words -------------------------------------------------------------------------

STOP_WORDS = frozenset(
    {
        "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are",
        "as", "at", "be", "because", "been", "before", "being", "below", "between", "both",
        "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each",
        "either", "else", "few", "for", "from", "further", "had", "has", "have", "having", "he",
        "her", "here", "hers", "him", "his", "how", "however", "i", "if", "in", "into", "is",
        "it", "its", "itself", "just", "me", "may", "might", "more", "most", "must", "my",
        "need", "needs", "of", "off", "on", "once", "one", "only", "or", "other", "our", "out",
        "over", "own", "per", "please", "same", "shall", "she", "should", "so", "some", "such",
        "than", "that", "the", "their", "them", "then", "there", "these", "they", "this",
        "those", "through", "thus", "to", "too", "under", "until", "up", "upon", "us", "very",
        "via", "was", "we", "were", "what", "when", "where", "whether", "which", "while", "who",
        "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "according",
        "not", "no", "never", "don't", "doesn't", "didn't", "isn't", "aren't", "can't",
        "cannot", "won't", "shouldn't", "mustn't", "without", "nor", "neither", "none",
        "let", "lets", "let's", "it's", "that's", "there's", "here's", "what's", "i'm", "you're",
        "make", "sure", "ensure", "way", "like", "well", "yes", "ok", "okay", "first", "next",
        "use", "used", "using", "within", "step", "steps", "now", "always",
    }
)  # fmt: skip
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)?")
_UNDOUBLE = frozenset("bdfgkmnprt")


def content_words(text: str) -> list[str]:
    """Lowercase stemmed words of `text` in order, stop words, numbers and single letters out."""
    words: list[str] = []
    for match in _WORD.finditer(text.lower()):
        word = match.group().replace("\u2019", "'")
        if word in STOP_WORDS or len(word) < 2 or word.isdigit():
            continue
        if word.endswith("'s"):
            word = word[:-2]
        words.append(stem(word))
    return words


def stem(word: str) -> str:
    """A light, consistent stem: plural -s/-es/-ies, -ing, -ed, then a final -e.

    Consistency matters more than linguistics: "replace", "replaces", "replaced", "replacing"
    all become "replac"; "valve" and "valves" become "valv".
    """
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 4 and word.endswith(("sses", "shes", "ches", "xes", "zes")):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("eed"):
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] in _UNDOUBLE:
                word = word[:-1]
            break
    if len(word) > 3 and word.endswith("e") and not word.endswith("ee"):
        word = word[:-1]
    return word
