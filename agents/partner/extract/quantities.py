"""The quantity grammar: where a protocol states a temperature, time, amount, concentration, speed or pH.

Every rule is a regular expression over the original text (so character offsets stay exact)
built from a shared number grammar (digits with thousands separators or decimal commas, number
words, ranges with any dash or `to`) and a unit alternation per type. Each match becomes a
`Mention` with the label the WLP annotation guidelines would give it and, where the unit is one
we normalise, a canonical `Quantity` (see `units.py`).

Span conventions follow the WLP gold (studied on its train split):
- the unit is part of the span (`5 min`, `14,000xg`, `55-60°C`), so is a range (`1-2 hours`,
  `20 to 40 s`) and a multiplier (`2 x 45 sec`, `3 x 1 mL`);
- hedges are not (`~`, `approximately`, `at least`, `up to`, `about`, an article);
- `room temperature` / `RT` are Temperature spans; `on ice` is annotated as the Location `ice`,
  so it is reported under that label, although the spec records it as an approximate temperature;
- `1X` is a Concentration, but `wash 3x` is a count of repeats (Numerical).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mshale_fl.agents.partner.extract.units import normalise
from mshale_fl.schemas.protocol_spec import Quantity
from mshale_fl.schemas.vocabulary import QuantityKind

SCORED_LABELS = ("Temperature", "Time", "Amount", "Concentration", "Speed", "pH")


@dataclass(frozen=True, slots=True)
class Mention:
    label: str
    start: int
    end: int
    quantity: Quantity | None = None


# ---------------------------------------------------------------- numbers

DASH = "[-\u2010\u2011\u2012\u2013\u2014\u2212\u00ad~]"
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d+,\d{1,2}(?![\d,])|\d+)(?:\.\d+)?|\.\d+"
NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
    "forty-five": 45, "fifty": 50, "sixty": 60, "ninety": 90, "half an": 0.5, "half a": 0.5, "a half": 0.5,
}  # fmt: skip
# Vague amounts are real quantities with no number: "several minutes", "a few drops".
VAGUE_WORDS = {"several": (2.0, 10.0), "few": (2.0, 5.0), "couple of": (2.0, 3.0), "a couple": (2.0, 3.0)}
_WORD = "|".join(sorted((re.escape(w) for w in NUMBER_WORDS), key=len, reverse=True))
_VAGUE = "|".join(sorted((re.escape(w) for w in VAGUE_WORDS), key=len, reverse=True))
NUM = rf"(?:{_DIGITS})"
WNUM = rf"(?:{_DIGITS}|(?i:\b(?:{_WORD})\b))"
SIGNED = rf"(?:[-\u2010\u2011\u2013\u2014\u2212+]\s?)?{NUM}"
RANGE_SEP = rf"(?:\s?{DASH}\s?|\s+to\s+)"
# A number glued to a letter is part of a name (`P0s`, `SW40`, `CN18C`, `HNO3`), not a quantity.
START = r"(?<![A-Za-z0-9_.\[/])(?<!\d,)"
LOOSE_START = r"(?<![0-9_.\[/])(?<!\d,)"  # for units that cannot be misread (`Denaturation98°C`, `R5.8 µl`)
BOUNDARY = r"(?![A-Za-z\u00b5\u03bc])"


def parse_number(text: str) -> float:
    """`14,000` -> 14000, `1,5` -> 1.5 (decimal comma), `two` -> 2, `−20` -> -20."""
    cleaned = text.strip().lower()
    if cleaned in NUMBER_WORDS:
        return float(NUMBER_WORDS[cleaned])
    negative = cleaned[:1] in "-\u2010\u2011\u2013\u2014\u2212"
    cleaned = cleaned.lstrip("-\u2010\u2011\u2013\u2014\u2212+ ")
    if re.fullmatch(r"\d+,\d{1,2}", cleaned):
        cleaned = cleaned.replace(",", ".")
    cleaned = cleaned.replace(",", "").replace(" ", "")
    value = float(cleaned)
    return -value if negative else value


def _bounds(match: re.Match[str]) -> tuple[float | None, float | None, float | None]:
    """(value, min, max) from the `lo`, `hi` and `vague` groups of a match."""
    groups = match.groupdict()
    if groups.get("vague"):
        low, high = VAGUE_WORDS[re.sub(r"\s+", " ", groups["vague"].lower())]
        return None, low, high
    low = parse_number(groups["lo"]) if groups.get("lo") else None
    high = parse_number(groups["hi"]) if groups.get("hi") else None
    if groups.get("mult"):
        factor = parse_number(groups["mult"])
        # "3 x 1 mL" is three times one millilitre: the step handles 3 mL in total.
        low = None if low is None else low * factor
        high = None if high is None else high * factor
    if high is None:
        return low, None, None
    return None, low, high


# ---------------------------------------------------------------- rules

Builder = Callable[[re.Match[str], str], Mention | None]


@dataclass(frozen=True, slots=True)
class Rule:
    label: str
    pattern: re.Pattern[str]
    build: Builder
    priority: int = 0  # breaks ties between equally long overlapping matches (higher wins)


def _unit_builder(label: str, kind: QuantityKind | None = None, approx: bool = False) -> Builder:
    def build(match: re.Match[str], text: str) -> Mention:
        value, low, high = _bounds(match)
        quantity = normalise(match.group("unit"), value, low, high, approx=approx or _hedged(text, match.start()),
                             kind=kind)  # fmt: skip
        return Mention(label, match.start(), match.end(), quantity)

    return build


def _fixed_builder(label: str, kind: QuantityKind | None, unit: str, value=None, low=None, high=None) -> Builder:
    def build(match: re.Match[str], text: str) -> Mention:
        quantity = None if kind is None else normalise(unit, value, low, high, approx=True, kind=kind)
        return Mention(label, match.start(), match.end(), quantity)

    return build


_HEDGE = re.compile(r"(?:~|\u223c|\u2248|\bapprox(?:imately|\.)?|\babout|\bcirca|\bca\.|\baround)\s*\(?$", re.IGNORECASE)


def _hedged(text: str, start: int) -> bool:
    return bool(_HEDGE.search(text[max(0, start - 16) : start]))


TEMP_UNIT = (
    r"(?P<unit>[\s\u00ad]?(?:[°º˚⁰]\s?(?:Celsius|celsius|[CcFf])(?![A-Za-z])|°(?!\s?(?:[A-Za-z]))|℃|℉)"
    r"|\s?deg(?:ree)?s?(?:\s?(?:C|F|Celsius|celsius|Fahrenheit|centigrade))?(?![A-Za-z])"
    r"|\s?(?:C|o\s?C)(?![A-Za-z0-9\]-]))"
)
TIME_UNIT = (
    r"(?P<unit>\s?(?:milliseconds?|ms|seconds?|secs?|s|minutes?|mins?|hours?|hrs?|h|days?|weeks?|wks?|months?|years?|yrs?))"
    + BOUNDARY
    + r"(?!\s?[-\u2010\u2013\u2212]\d)"  # "m-2 s-1" is a unit of flux, not a time
)
VOLUME_UNIT = r"(?:[uµμ][lL]|m[lL]s?|[lL]|n[lL]|microlit(?:er|re)s?|millilit(?:er|re)s?|lit(?:er|re)s?)"
MASS_UNIT = r"(?:[mnpk]?g|[uµμ]g|(?:milli|micro|nano|kilo)?grams?|mcg)"
MOLAR_UNIT = r"(?:[mnp]?M|[uµμ]M|[mµμun]?mol/[lL]|N)"

RULES: list[Rule] = []


def rule(label: str, pattern: str, build: Builder, priority: int = 0, flags: int = 0) -> None:
    RULES.append(Rule(label, re.compile(pattern, flags), build, priority))


ROOM_TEMPERATURE = {"value": 22.0, "low": 20.0, "high": 25.0}

# Temperature: "37°C", "37 °C", "4C", "55-60°C", "+2 to +8 °C", "60°C to 72°C", "42 degrees Celsius".
rule("Temperature", rf"{LOOSE_START}≥?(?P<lo>{SIGNED})(?:{RANGE_SEP}(?P<hi>{SIGNED}))?{TEMP_UNIT}",
     lambda m, text: _temperature(m, text))  # fmt: skip
rule(
    "Temperature",
    rf"{LOOSE_START}(?P<lo>{SIGNED})\s?(?:[°º˚⁰]\s?C|℃)\s?(?:{DASH}|to)\s?(?P<hi>{SIGNED})(?P<unit>\s?(?:[°º˚⁰]\s?C|℃))",
    _unit_builder("Temperature"),
    priority=1,
)
rule("Temperature", r"(?i:\broom[\s-]temp(?:erature)?s?\b|\bambient temperature\b)",
     _fixed_builder("Temperature", QuantityKind.TEMPERATURE, "degC", **ROOM_TEMPERATURE))  # fmt: skip
# "RT" is room temperature unless it is reverse transcriptase ("+RT", "RT mix", "RT-PCR", "Superscript III RT").
rule(
    "Temperature",
    r"(?<![-+\u2010(])\bRT\b(?![-\u2010]?q?PCR)(?!\s?(?:[Mm]ix|[Bb]uffer|[Ee]nzyme|[Pp]rimer|[Rr]eaction|control))",
    _fixed_builder("Temperature", QuantityKind.TEMPERATURE, "degC", **ROOM_TEMPERATURE),
)
# "on ice": the WLP gold marks the Location "ice"; the spec still learns it is about 0-4 °C.
rule("Location", r"(?<=\bon )ice\b(?![\s-]*(?:cold|bath|box|bucket|water|pack|block))",
     _fixed_builder("Location", QuantityKind.TEMPERATURE, "degC", value=0.0, low=0.0, high=4.0))  # fmt: skip

# Time: "5 min", "1-2 hours", "30s to 1 minute", "2 X 45 sec", "overnight", "several minutes".
rule(
    "Time",
    rf"{START}(?:(?P<mult>{NUM})\s?[xX×]\s?)?(?P<lo>{WNUM})(?:{RANGE_SEP}(?P<hi>{WNUM}))?\s?(?:more |additional |extra )?{TIME_UNIT}",
    _unit_builder("Time"),
)
rule(
    "Time",
    rf"{START}(?P<lo>{NUM})\s?(?P<first>{TIME_UNIT.replace('?P<unit>', '')})\s?(?:{DASH}|to)\s?(?P<hi>{NUM})\s?{TIME_UNIT}",
    lambda m, text: _mixed_range(m, "Time"),
    priority=1,
)
rule("Time", rf"(?i:\b(?P<vague>{_VAGUE})\s+{TIME_UNIT})", _unit_builder("Time", approx=True))
rule("Time", r"\b[Dd]ay\s\d{1,3}\b(?!\s?[-\u2013]\s?\d)", _fixed_builder("Time", None, ""))  # a day of a schedule ("on day 3")
rule("Time", r"(?i:\bover\s?night\b)(?!\s+(?:[A-Z]\. ?\w+\s+)?(?:cultures?|grown|starter))|\bO/N\b",
     _fixed_builder("Time", QuantityKind.DURATION, "hour", value=16.0, low=12.0, high=18.0))  # fmt: skip

# Amount: "250µl", "1.5 mL", "1-10mg", "3 x 1 mL", "2 volumes", "equal volume", "a few drops", "10 U".
_AMOUNT_UNIT = rf"(?:{VOLUME_UNIT}|{MASS_UNIT})"
rule(
    "Amount",
    rf"{LOOSE_START}(?:(?P<mult>{NUM})\s?[xX×]\s?)?(?P<lo>{NUM})(?:{RANGE_SEP}(?P<hi>{NUM}))?[\s-]?(?P<unit>{_AMOUNT_UNIT})"
    rf"(?:{BOUNDARY}|(?<=[lL])(?=[A-Z]))(?!\s?/\s?[a-zA-Zµμ])",  # "2-ml tube"; "5.8 µlEnGen" in a pasted table
    lambda m, text: _amount_or_speed(m, text),
)
rule(
    "Amount",
    rf"{LOOSE_START}(?P<lo>{NUM})\s?(?P<first>{_AMOUNT_UNIT})\s?(?:{DASH}|to)\s?(?P<hi>{NUM})\s?(?P<unit>{_AMOUNT_UNIT}){BOUNDARY}(?!\s?/)",
    lambda m, text: _mixed_range(m, "Amount"),
    priority=1,
)
rule("Amount", rf"{START}(?P<lo>{WNUM})(?:{RANGE_SEP}(?P<hi>{NUM}))?\s?(?P<unit>vol(?:ume)?s?|U|units?){BOUNDARY}(?!/)",
     _unit_builder("Amount"))  # fmt: skip
rule("Amount", rf"{START}{NUM}(?:{RANGE_SEP}{NUM})?\s?(?:[pnµμuf]mol(?:es)?|[µμu]Ci|mCi)\b", _fixed_builder("Amount", None, ""))
rule("Amount", r"(?i:\bequal vol(?:ume)?s?\b)", _fixed_builder("Amount", QuantityKind.RELATIVE_VOLUME, "volumes", value=1.0))
rule("Amount", rf"(?i:(?:\b(?P<vague>{_VAGUE})|(?P<lo>{WNUM}))\s*drops?\b)", _fixed_builder("Amount", None, ""))

# Concentration: "70%", "1X", "10 mM", "5 ng/mL", "1:100", "1 x 10^8 cells/mL".
rule("Concentration", rf"{LOOSE_START}(?P<lo>{NUM})(?:{RANGE_SEP}(?P<hi>{NUM}))?\s?(?P<unit>%(?:\s?\(?[wv]/[wv]\)?)?)",
     _unit_builder("Concentration"))  # fmt: skip
rule("Concentration", rf"{START}(?P<lo>{NUM})(?:{RANGE_SEP}(?P<hi>{NUM}))?\s?(?P<unit>{MOLAR_UNIT})(?![A-Za-z0-9])",
     lambda m, text: _molar(m))  # fmt: skip
rule(
    "Concentration",
    rf"{START}(?P<lo>{NUM})(?:{RANGE_SEP}(?P<hi>{NUM}))?\s?(?P<unit>{MASS_UNIT}\s?/\s?{VOLUME_UNIT}){BOUNDARY}",
    _unit_builder("Concentration"),
    priority=1,
)
rule("Concentration", rf"{START}{NUM}\s?(?:U|units?)\s?/\s?{VOLUME_UNIT}{BOUNDARY}", _fixed_builder("Concentration", None, ""))
rule("Concentration", r"(?<![\d:.])\d+(?::\d+)+(?![\d:])", lambda m, text: _ratio(m, text))
rule(
    "Concentration",
    rf"{START}{NUM}(?:\s?{DASH}\s?{NUM})?\s?[xX×]\s?10\^?[0-9⁰¹²³⁴⁵⁶⁷⁸⁹]+\s?(?:cells|particles|CFU|cfu|pfu|PFU)\s?(?:/|per)\s?m?[lL]\b",
    _fixed_builder("Concentration", None, ""),
    priority=1,
)
rule("Concentration", rf"{START}(?P<lo>{NUM})(?P<unit>\s?[xX×])(?![a-z0-9])(?!\s?g\b)(?!\s?\d)", lambda m, text: _fold_or_count(m, text))

# Speed: "14,000xg", "14000 x g", "10,000 rpm", "12 K rpm", "maximum speed", "13K" after a spin.
_SPEED_NUM = rf"(?:\d{{1,3}}(?: \d{{3}})+|{NUM})"
rule(
    "Speed",
    rf"{LOOSE_START}≥?(?P<lo>{_SPEED_NUM})(?:{RANGE_SEP}(?P<hi>{_SPEED_NUM}))?\s?(?P<unit>[kK]?\s?(?:[xX×]\s?g|rcf|RCF|[xX]\s?G)|[kK]\s?g)(?![A-Za-z])",
    _unit_builder("Speed", QuantityKind.SPEED_RCF),
    priority=2,
)
rule(
    "Speed",
    rf"{LOOSE_START}≥?(?P<lo>{_SPEED_NUM})(?:{RANGE_SEP}(?P<hi>{_SPEED_NUM}))?\s?(?P<unit>[kK]?\s?(?:rpm|RPM|rev/min))(?![A-Za-z])",
    _unit_builder("Speed", QuantityKind.SPEED_RPM),
    priority=2,
)
rule("Speed", rf"{START}\d+(?:\.\d+)?\s?K\b(?!\s?[a-zA-Z])", lambda m, text: _thousands_speed(m, text))
rule(
    "Speed",
    r"(?i:\b(?:max(?:imum|imal|\.)?|full|top|highest|high|lowest|low|medium)\s+speed\b)(?!\s+(?:centrifuge|vortex))",
    _fixed_builder("Speed", None, ""),
)

# pH: "pH 8.0", "pH8", "pH of 9.5", "pH = 8", "pH 7–8.5".
rule("pH", rf"\b[pP]H\s?(?:of\s|=\s?|:\s?)?(?P<lo>{NUM})(?:\s?(?:{DASH}|to)\s?(?P<hi>{NUM}))?",
     lambda m, text: Mention("pH", m.start(), m.end(), normalise("ph", *_bounds(m), kind=QuantityKind.PH)))  # fmt: skip

# Cycles and repeats (not a scored WLP type, but the spec records them): "30 cycles", "repeat 3 times".
rule("Numerical", rf"{START}(?P<lo>{WNUM})\s?(?P<unit>cycles?|times|rounds)\b", _unit_builder("Numerical", QuantityKind.CYCLES))
rule("Numerical", r"(?i:\b(?P<word>twice|thrice)\b)",
     lambda m, text: Mention("Numerical", m.start(), m.end(), normalise("cycles", 2.0 if m.group("word").lower() == "twice" else 3.0, kind=QuantityKind.CYCLES)))  # fmt: skip


# ---------------------------------------------------------------- rule helpers

_CENTRIFUGE_CONTEXT = re.compile(r"(?i)centrifug|spin|pellet|\bat\s*$")


def _temperature(match: re.Match[str], text: str) -> Mention | None:
    """A bare `C` after a number is a temperature unless it is an isotope (`13C`, `14C`)."""
    unit = match.group("unit").strip()
    if unit in ("C", "oC") and not match.group("hi"):
        glued_to_a_name = match.start() > 0 and text[match.start() - 1].isalpha()
        if glued_to_a_name or match.group("lo") in ("12", "13", "14"):
            return None
    return _unit_builder("Temperature")(match, text)


def _amount_or_speed(match: re.Match[str], text: str) -> Mention:
    """A bare `g` is a mass (`5 g`) or a centrifugal force (`10,000 g`, `at 500g` after a spin).

    A range whose first number is glued to a word (`NaN3 to 192.4 µl`) keeps only its second end."""
    if match.group("hi") and not match.group("mult") and match.start() > 0 and text[match.start() - 1].isalpha():
        start = match.start("hi")
        quantity = normalise(match.group("unit"), parse_number(match.group("hi")))
        return Mention("Amount", start, match.end(), quantity)
    unit = match.group("unit")
    if unit == "g" and not match.group("mult"):
        value, low, high = _bounds(match)
        largest = max(x for x in (value, low, high) if x is not None)
        before = text[max(0, match.start() - 60) : match.start()]
        if largest >= 1000 or (largest >= 100 and _CENTRIFUGE_CONTEXT.search(before)):
            return Mention("Speed", match.start(), match.end(),
                           normalise("xg", value, low, high, kind=QuantityKind.SPEED_RCF))  # fmt: skip
    return _unit_builder("Amount")(match, text)


def _mixed_range(match: re.Match[str], label: str) -> Mention:
    """`30s to 1 minute`, `1 pg-100 ng`: each end has its own unit; both are normalised first."""
    low = normalise(match.group("first"), parse_number(match.group("lo")))
    high = normalise(match.group("unit"), parse_number(match.group("hi")))
    quantity = None
    if low is not None and high is not None and low.kind is high.kind and None not in (low.value, high.value):
        quantity = Quantity(kind=low.kind, unit=low.unit, min=min(low.value, high.value), max=max(low.value, high.value))  # type: ignore[type-var]
    return Mention(label, match.start(), match.end(), quantity)


def _molar(match: re.Match[str]) -> Mention:
    """`10 mM`, `1 M`; normality (`0.1 N`) is a concentration but not a molarity, so it has no quantity."""
    if match.group("unit") == "N":
        return Mention("Concentration", match.start(), match.end(), None)
    value, low, high = _bounds(match)
    return Mention("Concentration", match.start(), match.end(), normalise(match.group("unit"), value, low, high))


_TIME_OF_DAY = re.compile(r"(?i)(?:at|by|until|from|=)\s*$")
_DILUTION_CONTEXT = re.compile(r"(?i)dilut|antibod")


def _ratio(match: re.Match[str], text: str) -> Mention | None:
    """`1:100` after "dilute" is a Concentration; other ratios (`24:1` phenol mixes, `2:1 ratio`) are
    annotated inconsistently in WLP, so they are kept as an unscored `Ratio` for the spec only."""
    before = text[max(0, match.start() - 40) : match.start()]
    if _TIME_OF_DAY.search(before[-8:]):
        return None
    parts = [float(p) for p in match.group(0).split(":")]
    quantity = None
    if len(parts) == 2 and parts[1] > 0:
        quantity = normalise("ratio", parts[0] / parts[1], kind=QuantityKind.RATIO)
    after = text[match.end() : match.end() + 40]
    label = "Concentration" if _DILUTION_CONTEXT.search(before) or _DILUTION_CONTEXT.search(after) else "Ratio"
    return Mention(label, match.start(), match.end(), quantity)


_REPEAT_VERB = re.compile(r"(?i)\b(?:wash\w*|rins\w*|repeat\w*|invert\w*|pipett?\w*|mix\w*|spin|vortex\w*|flick\w*|tap\w*)\s+(?:\w+\s+){0,3}$")
_NOT_A_REAGENT = re.compile(r"\s*(?:[,.;:)]|$|(?:with|in|for|and|or|each|per|again|more|to|at|the|a|an|until|then|total)\b)", re.IGNORECASE)


def _fold_or_count(match: re.Match[str], text: str) -> Mention:
    """`1X PBS`, `10x buffer` is a fold concentration; `wash 3x` or `invert 5x` counts repeats."""
    after = text[match.end() : match.end() + 12]
    before = text[max(0, match.start() - 40) : match.start()]
    value = parse_number(match.group("lo"))
    if _NOT_A_REAGENT.match(after) and _REPEAT_VERB.search(before):
        return Mention("Numerical", match.start(), match.end(), normalise("cycles", value, kind=QuantityKind.CYCLES))
    return Mention("Concentration", match.start(), match.end(), normalise("x", value, kind=QuantityKind.CONCENTRATION_FOLD))


def _thousands_speed(match: re.Match[str], text: str) -> Mention | None:
    """`13K` right after a centrifuge or spin is a speed (the unit, rpm or x g, is left unsaid)."""
    if _CENTRIFUGE_CONTEXT.search(text[max(0, match.start() - 40) : match.start()]):
        return Mention("Speed", match.start(), match.end(), None)
    return None


# ---------------------------------------------------------------- resolution


def _candidates(text: str) -> Iterator[tuple[Mention, int]]:
    for item in RULES:
        for match in item.pattern.finditer(text):
            mention = item.build(match, text)
            if mention is not None and mention.end > mention.start:
                yield _trim(mention, text), item.priority


def _trim(mention: Mention, text: str) -> Mention:
    """Drop leading/trailing spaces a unit alternative may have swallowed."""
    start, end = mention.start, mention.end
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if (start, end) == (mention.start, mention.end):
        return mention
    return Mention(mention.label, start, end, mention.quantity)


def find_quantities(text: str) -> list[Mention]:
    """Every quantity mention in `text`, non-overlapping, longest match first, in text order."""
    candidates = sorted(_candidates(text), key=lambda c: (-(c[0].end - c[0].start), -c[1], c[0].start, c[0].label))
    taken: list[Mention] = []
    # The taken spans never overlap, so sorted by start they are sorted by end too: only the last
    # one starting before a mention ends can overlap it (a bisection, not a scan: hostile input
    # with a hundred thousand quantities must not take quadratic time).
    starts: list[int] = []
    ends: list[int] = []
    for mention, _priority in candidates:
        before = bisect.bisect_left(starts, mention.end) - 1
        if before >= 0 and ends[before] > mention.start:
            continue
        taken.append(mention)
        starts.insert(before + 1, mention.start)
        ends.insert(before + 1, mention.end)
    return sorted(taken, key=lambda m: (m.start, m.end))
