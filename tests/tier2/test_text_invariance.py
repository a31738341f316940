"""Invariances of the whole partner pipeline (text -> extract_spec -> featurize), tested on protocol texts.

The featurizer only sees specs, so these hold because the spec keeps classes, not names, and
because the vector keeps bins and counts, not positions of notes or layout of the text. What the
extractor itself treats as meaningful is outside these properties and is listed in
docs/features.md ("What the pipeline is and is not invariant to").
"""

from __future__ import annotations

import re

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mshale_fl.agents.partner.extract import classes
from mshale_fl.schemas.vocabulary import ReagentClass

from .support import protocol_text, spec_of_text, vector_of_text

TEXT_PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Names that the extractor maps to the same reagent class and that are no domain or organism cue
# (a name such as `DAPI` or `trypsin` is also evidence of a domain, so it may change `domain`).
SAME_CLASS_NAMES: dict[ReagentClass, tuple[str, ...]] = {
    ReagentClass.ALCOHOL: ("ethanol", "isopropanol", "methanol", "butanol", "EtOH"),
    ReagentClass.BUFFER: ("PBS", "TBS", "HEPES", "Tris-HCl", "saline", "TE"),
    ReagentClass.ORGANIC_SOLVENT: ("chloroform", "phenol", "DMSO", "acetone", "xylene"),
    ReagentClass.SALT: ("NaCl", "KCl", "MgCl2", "sodium acetate", "LiCl"),
    ReagentClass.ENZYME: ("proteinase K", "lysozyme", "RNase A", "DNase I", "collagenase"),
    ReagentClass.DETERGENT: ("SDS", "Triton X-100", "Tween 20", "NP-40", "saponin"),
    ReagentClass.SUGAR: ("glucose", "sucrose", "glycerol", "sorbitol"),
    ReagentClass.DYE: ("Hoechst", "crystal violet", "trypan blue", "eosin"),
}

TEMPLATES = (
    ("Add 500 µl {r} to the tube and mix by inverting.", "Centrifuge at 12,000 x g for 10 min at 4 °C.",
     "Discard the supernatant.", "Wash the pellet with 1 ml {r}.", "Incubate at room temperature for 5 min."),
    ("Resuspend cells in 200 µl {r}.", "Incubate on ice for 30 min.", "Transfer to a new tube.",
     "Store at -20 °C overnight."),
    ("Prepare 10 ml of 2% {r}.", "{r} is added to the sample (100 µl).", "Vortex briefly.",
     "Heat at 95 °C for 5 min.", "Spin down at 3000 rpm for 1 min."),
)  # fmt: skip

BASE_STEPS = (
    "Add 700 µl lysis buffer and mix by inverting a few times.",
    "Incubate the sample at 55-60 °C for 15 minutes.",
    "Add 200 µl chloroform and mix by inverting the tube several times.",
    "Centrifuge for 10 minutes at 14,000 x g and remove the upper phase to a clean microcentrifuge tube.",
    "Precipitate the DNA with 500 µl isopropanol.",
    "Wash the pellet with 70% ethanol and dry for 5 min.",
    "Resuspend the DNA in 50 µl TE buffer and store at -20 °C.",
)
# Lines that are notes, not steps: no action, no quantity (checked below, so the test cannot pass vacuously).
NOTES = (
    "This step will significantly improve the yield.",
    "Note: fresh solutions work best.",
    "Results may vary between batches of the kit.",
    "The pellet may be hard to see.",
)


@TEXT_PROPERTY
@given(
    st.sampled_from(list(SAME_CLASS_NAMES)).flatmap(
        lambda reagent: st.tuples(st.just(reagent), st.permutations(SAME_CLASS_NAMES[reagent]))
    ),
    st.sampled_from(TEMPLATES),
)
def test_renaming_a_reagent_within_its_class_changes_nothing(drawn, template: tuple[str, ...]) -> None:
    reagent, names = drawn
    first, second = names[0], names[1]
    assert classes.reagents_in(first) == classes.reagents_in(second) == [reagent]
    text_first = protocol_text("Extraction", [line.format(r=first) for line in template])
    text_second = protocol_text("Extraction", [line.format(r=second) for line in template])
    assert text_first != text_second
    spec_first, spec_second = spec_of_text(text_first), spec_of_text(text_second)
    assert spec_first.content_hash != spec_second.content_hash  # different texts ...
    assert spec_first.steps == spec_second.steps  # ... the same spec, since it keeps classes, not names
    assert np.array_equal(vector_of_text(text_first), vector_of_text(text_second))


_SPACES = st.sampled_from((" ", "  ", "\t", " \t ", "\u00a0", "   "))


@TEXT_PROPERTY
@given(st.data())
def test_whitespace_of_the_text_changes_nothing(data: st.DataObject) -> None:
    """Runs of spaces and tabs inside a line, trailing spaces, blank lines, CRLF or CR line ends.
    (A line that starts with whitespace continues the step above in the .txt format, so leading
    indentation of a step is layout with a meaning and is not varied here.)"""
    title = "DNA extraction"
    reference = vector_of_text(protocol_text(title, BASE_STEPS))

    def respace(line: str) -> str:
        words = line.split(" ")
        joined = words[0]
        for word in words[1:]:
            joined += data.draw(_SPACES) + word
        return joined + data.draw(st.sampled_from(("", " ", "\t", "  ")))

    newline = data.draw(st.sampled_from(("\n", "\r\n", "\r")))
    lines = [respace(title)]
    for step in BASE_STEPS:
        lines += [""] * data.draw(st.integers(0, 2)) + [respace(step)]
    varied = newline.join(lines) + newline * data.draw(st.integers(0, 3))
    assert varied != protocol_text(title, BASE_STEPS)
    assert np.array_equal(vector_of_text(varied), reference)


_CLASS_WORDS = re.compile(
    r"\b(lysis buffer|chloroform|isopropanol|ethanol|TE buffer|DNA|microcentrifuge tube|tube|sample|pellet)\b"
)


@TEXT_PROPERTY
@given(st.sampled_from((str.upper, str.lower, str.title, str.capitalize, str.swapcase)),
       st.sampled_from((str.upper, str.lower, str.title, str.swapcase)))  # fmt: skip
def test_case_of_the_title_and_of_reagent_and_labware_names_changes_nothing(title_case, name_case) -> None:
    """Class and domain lexicons ignore case, and the title only counts towards domain and organism.
    (The case of action verbs and units is read by the extractor: see docs/features.md.)"""
    title = "Genomic DNA Extraction From Gram-Negative Bacteria"
    reference = vector_of_text(protocol_text(title, BASE_STEPS))
    recased = [_CLASS_WORDS.sub(lambda match: name_case(match.group(0)), step) for step in BASE_STEPS]
    assert recased != list(BASE_STEPS)
    assert np.array_equal(vector_of_text(protocol_text(title_case(title), recased)), reference)


def test_the_notes_are_not_steps() -> None:
    with_notes = spec_of_text(protocol_text("DNA extraction", [*BASE_STEPS, *NOTES]))
    without = spec_of_text(protocol_text("DNA extraction", BASE_STEPS))
    assert with_notes.steps == without.steps


@TEXT_PROPERTY
@given(st.lists(st.integers(min_value=0, max_value=len(BASE_STEPS)), min_size=len(NOTES), max_size=len(NOTES)),
       st.permutations(NOTES))  # fmt: skip
def test_moving_notes_that_are_not_steps_changes_nothing(positions: list[int], notes: list[str]) -> None:
    reference = vector_of_text(protocol_text("DNA extraction", [*BASE_STEPS, *NOTES]))
    lines = list(BASE_STEPS)
    for note, position in sorted(zip(notes, positions, strict=True), key=lambda pair: -pair[1]):
        lines.insert(position, note)
    assert np.array_equal(vector_of_text(protocol_text("DNA extraction", lines)), reference)
