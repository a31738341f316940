"""The Tier 2 feature layout as data: 223 features in named groups, each with its meaning, unit and scaling.

This module is the single source of the layout: the featurizer reads it to compute a vector,
`docs/features.md` is generated from it (`python -m mshale_fl.agents.partner.featurize.docs`),
and `inspect --show-features` and the validator read names, ranges and grids from it.

Rules the layout keeps (checked when this module is imported, so a vocabulary change that the
layout does not account for fails loudly instead of shifting indices silently):
- exactly FEATURE_DIM features, unique names, groups in index order without gaps;
- every member of a vocabulary the layout groups (operations, quantity kinds, equipment,
  labware, reagent classes, domains, organisms) is counted by exactly one feature. Rare members
  share a feature (`equipment.other`, `organism.rodent`, ...) so that the vocabularies fit 223;
- every value lies in [0, 1] and on its group's grid (see `Encoding`), so nothing finer than a
  bin, a capped count level or a share rounded to eighths can be carried.

Changing anything here changes what a vector means: bump FEATURE_SCHEMA_VERSION (schemas/) with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum, StrEnum

from mshale_fl.agents.partner.featurize.bins import FRACTION_DENOMINATOR
from mshale_fl.schemas.feature_vector import FEATURE_DIM, FEATURE_SCHEMA_VERSION
from mshale_fl.schemas.vocabulary import (
    Domain,
    EquipmentClass,
    LabwareClass,
    Operation,
    Organism,
    QuantityKind,
    ReagentClass,
)

COUNT_THRESHOLDS = (0, 1, 2, 4, 8)
"""Default count levels: 0 | 1 | 2-3 | 4-7 | 8 or more -> 0, 1/4, 1/2, 3/4, 1 (log2 bins, capped at 8)."""

DIVERSITY_THRESHOLDS = (0, 2, 4, 8, 16)
"""Levels for numbers of distinct classes: 0-1 | 2-3 | 4-7 | 8-15 | 16 or more."""


class Encoding(StrEnum):
    """How the features of a group are scaled; every encoding stays in [0, 1]."""

    ONE_HOT = "one_hot"  # exactly one feature of the group is 1, the others 0
    PRESENCE = "presence"  # 1 if any step names a member, else 0
    COUNT_LEVEL = "count_level"  # capped log2 level of a count: 0, 1/4, 1/2, 3/4, 1
    FRACTION = "fraction"  # a share of steps rounded to the nearest 1/8


@dataclass(frozen=True)
class Member:
    """One feature as declared: what it selects. `selects` holds the vocabulary members it counts,
    `low`/`high` the half-open bin [low, high) it counts values in (None: unbounded)."""

    name: str
    meaning: str
    selects: tuple[Enum, ...] = ()
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Group:
    key: str
    title: str
    meaning: str  # what one feature of the group measures
    unit: str  # unit of the underlying quantity or count
    encoding: Encoding
    members: tuple[Member, ...]
    start: int = 0  # first index, set when the layout is assembled
    kind: QuantityKind | None = None  # histogram groups: the quantity kind binned
    third: int | None = None  # workflow groups: 0, 1, 2 = first, middle, last third of the steps
    thresholds: tuple[int, ...] = COUNT_THRESHOLDS  # count-level groups

    @property
    def stop(self) -> int:
        return self.start + len(self.members)

    @property
    def grid(self) -> int:
        """Every value of the group is a multiple of 1/grid in [0, 1]."""
        if self.encoding is Encoding.COUNT_LEVEL:
            return len(self.thresholds) - 1
        if self.encoding is Encoding.FRACTION:
            return FRACTION_DENOMINATOR
        return 1

    @property
    def scaling(self) -> str:
        if self.encoding is Encoding.COUNT_LEVEL:
            edges = self.thresholds
            bands = [f"{a}" if b - a == 1 else f"{a}-{b - 1}" for a, b in zip(edges, edges[1:], strict=False)]
            return f"count level {' / '.join([*bands, f'{edges[-1]}+'])} -> 0, 1/4, 1/2, 3/4, 1"
        if self.encoding is Encoding.FRACTION:
            return f"share of steps, rounded to 1/{FRACTION_DENOMINATOR}"
        if self.encoding is Encoding.ONE_HOT:
            return "one-hot: one feature is 1, the rest 0"
        return "0 or 1"

    @property
    def edges(self) -> tuple[float, ...]:
        """Bin edges of a histogram group (the `low` of every member after the first)."""
        return tuple(m.low for m in self.members[1:] if m.low is not None)


@dataclass(frozen=True)
class Feature:
    index: int
    name: str  # "<group>.<member>", stable within a feature schema version
    group: Group
    member: Member
    low: float = 0.0  # documented range
    high: float = 1.0

    @property
    def meaning(self) -> str:
        return self.member.meaning

    @property
    def grid(self) -> int:
        return self.group.grid


# ---------------------------------------------------------------- helpers


def _each(vocabulary: Iterable[Enum], meaning: str) -> tuple[Member, ...]:
    return tuple(Member(m.value, meaning.format(name=m.value.replace("_", " ")), (m,)) for m in vocabulary)


def _grouped(groups: Sequence[tuple[str, Sequence[Enum], str]]) -> tuple[Member, ...]:
    return tuple(Member(name, meaning, tuple(selects)) for name, selects, meaning in groups)


def _bins(edges: Sequence[float], names: Sequence[str], labels: Sequence[str], what: str) -> tuple[Member, ...]:
    if not (len(names) == len(labels) == len(edges) + 1):
        raise ValueError(f"{what}: {len(edges)} edges need {len(edges) + 1} names and labels")
    bounds = [None, *edges, None]
    return tuple(
        Member(name, f"{what} {label}", low=bounds[i], high=bounds[i + 1])
        for i, (name, label) in enumerate(zip(names, labels, strict=True))
    )


def _histogram(kind: QuantityKind, title: str, unit: str, edges, names, labels, noun: str = "") -> Group:
    noun = noun or title.lower()
    return Group(
        key=kind.value,
        title=title,
        meaning=f"how many stated {noun} values fall in each bin (a range counts at its midpoint)",
        unit=unit,
        encoding=Encoding.COUNT_LEVEL,
        members=_bins(edges, names, labels, noun),
        kind=kind,
    )


# ---------------------------------------------------------------- the groups

OPERATION_FAMILIES: tuple[tuple[str, tuple[Operation, ...], str], ...] = (
    ("liquid_handling", (Operation.ADD, Operation.TRANSFER, Operation.ALIQUOT, Operation.REMOVE, Operation.DISCARD),
     "add, transfer, aliquot, remove, discard"),
    ("mixing", (Operation.MIX, Operation.VORTEX, Operation.SHAKE), "mix, vortex, shake"),
    ("separation", (Operation.CENTRIFUGE, Operation.FILTER, Operation.WASH, Operation.ELUTE, Operation.PRECIPITATE,
                    Operation.ELECTROPHORESE), "centrifuge, filter, wash, elute, precipitate, electrophorese"),
    ("temperature_time", (Operation.INCUBATE, Operation.HEAT, Operation.COOL, Operation.FREEZE, Operation.THAW,
                          Operation.THERMOCYCLE, Operation.DRY, Operation.STORE, Operation.WAIT),
     "incubate, heat, cool, freeze, thaw, thermocycle, dry, store, wait"),
    ("material_change", (Operation.RESUSPEND, Operation.DILUTE, Operation.DISSOLVE, Operation.HOMOGENIZE,
                         Operation.LYSE, Operation.SONICATE, Operation.STAIN),
     "resuspend, dilute, dissolve, homogenize, lyse, sonicate, stain"),
    ("cells_organisms", (Operation.INOCULATE, Operation.PLATE), "inoculate, plate"),
    ("setup_reading", (Operation.SEAL, Operation.PLACE, Operation.PREPARE, Operation.MEASURE, Operation.REPEAT),
     "seal, place, prepare, measure, repeat"),
    ("other", (Operation.OTHER,), "other (a line with quantities but no recognised action)"),
)  # fmt: skip
"""Operation families follow the sections of the Operation vocabulary."""

THIRDS = ("first", "middle", "last")

STRUCTURE_MEMBERS = {
    "step_content": (
        Member("with_quantities", "share of steps stating at least one quantity"),
        Member("with_several_quantities", "share of steps stating two or more quantities"),
        Member("with_classes", "share of steps naming any equipment, labware or reagent class"),
    ),
    "diversity": (
        Member("operations", "number of distinct operations"),
        Member("reagent_classes", "number of distinct reagent classes"),
        Member("equipment_labware_classes", "number of distinct equipment and labware classes"),
    ),
}

HANDLING_MEMBERS = (
    Member("on_ice", "approximate temperatures of -10 to 4 degC (`on ice`, `~4 degC`)"),
    Member("room_temperature", "approximate temperatures of 18 to 28 degC (`RT`, `room temperature`)"),
    Member("overnight", "approximate durations of 8 to 24 h (`overnight`, `O/N`)"),
    Member("other_approximate", "other approximate quantities (hedged with `~`, `about`; vague words)"),
    Member("ranges", "quantities stated as a range (`55-60 degC`, `1-2 h`) and not approximate"),
)

SAMPLE_TYPES = (
    Member("tissue", "the first sample-like material named is tissue (incl. blood, plant parts, soil)",
           (ReagentClass.TISSUE,)),
    Member("cells", "the first sample-like material named is cells (cultures, pellets, lysates)",
           (ReagentClass.CELLS,)),
    Member("nucleic_acid", "the first sample-like material named is nucleic acid", (ReagentClass.NUCLEIC_ACID,)),
    Member("protein", "the first sample-like material named is protein", (ReagentClass.PROTEIN,)),
    Member("none", "no step names tissue, cells, nucleic acid or protein"),
)  # fmt: skip
"""Sample type: the first of these classes named by a step, in step order; within one step the
earlier member of this list wins (upstream material first)."""

_EQ = EquipmentClass
EQUIPMENT_GROUPS = (
    ("centrifuge", (_EQ.CENTRIFUGE,), "a centrifuge (floor or benchtop, rotor)"),
    ("microcentrifuge", (_EQ.MICROCENTRIFUGE,), "a microcentrifuge"),
    ("thermocycler", (_EQ.THERMOCYCLER,), "a thermocycler"),
    ("incubator", (_EQ.INCUBATOR,), "an incubator"),
    ("bath_or_block", (_EQ.WATER_BATH, _EQ.HEAT_BLOCK), "a water bath or heat block"),
    ("mixer", (_EQ.VORTEXER, _EQ.SHAKER, _EQ.ROTATOR), "a vortexer, shaker or rotator"),
    ("pipette", (_EQ.PIPETTE,), "a pipette"),
    ("optical_reader", (_EQ.SPECTROPHOTOMETER, _EQ.PLATE_READER), "a spectrophotometer or plate reader"),
    ("flow_cytometer", (_EQ.FLOW_CYTOMETER,), "a flow cytometer"),
    ("electrophoresis", (_EQ.GEL_BOX, _EQ.TRANSILLUMINATOR), "a gel box or transilluminator"),
    ("magnet", (_EQ.MAGNET,), "a magnet"),
    ("disruptor", (_EQ.SONICATOR, _EQ.HOMOGENIZER), "a sonicator or homogenizer"),
    ("cold_storage", (_EQ.FREEZER, _EQ.FRIDGE), "a freezer or fridge"),
    ("hood", (_EQ.HOOD,), "a hood"),
    ("microscope", (_EQ.MICROSCOPE,), "a microscope"),
    ("other", (_EQ.VACUUM_CONCENTRATOR, _EQ.AUTOCLAVE, _EQ.BALANCE, _EQ.PH_METER, _EQ.ELECTROPORATOR, _EQ.OTHER),
     "other equipment (vacuum concentrator, autoclave, balance, pH meter, electroporator, other)"),
)  # fmt: skip

_LW = LabwareClass
LABWARE_GROUPS = (
    ("tube", (_LW.TUBE,), "a tube or vial of unstated size"),
    ("microtube", (_LW.MICROTUBE,), "a microcentrifuge tube"),
    ("conical_tube", (_LW.CONICAL_TUBE,), "a conical tube"),
    ("pcr_tube", (_LW.PCR_TUBE,), "a PCR tube, strip or plate"),
    ("plate", (_LW.PLATE,), "a plate or well"),
    ("vessel", (_LW.FLASK, _LW.BEAKER, _LW.BOTTLE), "a flask, beaker or bottle"),
    ("column", (_LW.COLUMN,), "a column"),
    ("dish", (_LW.DISH,), "a dish"),
    ("slide_coverslip", (_LW.SLIDE, _LW.COVERSLIP), "a slide or coverslip"),
    ("membrane", (_LW.MEMBRANE,), "a membrane"),
    ("gel", (_LW.GEL,), "a gel"),
    ("other", (_LW.CRYOVIAL, _LW.CUVETTE, _LW.PIPETTE_TIP, _LW.SYRINGE, _LW.OTHER),
     "other labware (cryovial, cuvette, pipette tip, syringe, other)"),
)  # fmt: skip

_RC = ReagentClass
REAGENT_GROUPS = (
    ("buffer", (_RC.BUFFER,), "steps naming a buffer"),
    ("water", (_RC.WATER,), "steps naming water"),
    ("enzyme", (_RC.ENZYME,), "steps naming an enzyme"),
    ("nucleic_acid", (_RC.NUCLEIC_ACID,), "steps naming a nucleic acid"),
    ("primer_nucleotide", (_RC.PRIMER, _RC.NUCLEOTIDE), "steps naming primers or nucleotides"),
    ("salt", (_RC.SALT,), "steps naming a salt"),
    ("detergent", (_RC.DETERGENT,), "steps naming a detergent"),
    ("alcohol", (_RC.ALCOHOL,), "steps naming an alcohol"),
    ("organic_solvent", (_RC.ORGANIC_SOLVENT,), "steps naming an organic solvent"),
    ("acid_base", (_RC.ACID, _RC.BASE), "steps naming an acid or a base"),
    ("chelator_reducing_agent", (_RC.CHELATOR, _RC.REDUCING_AGENT), "steps naming a chelator or reducing agent"),
    ("fixative", (_RC.FIXATIVE,), "steps naming a fixative"),
    ("antibody", (_RC.ANTIBODY,), "steps naming an antibody"),
    ("protein", (_RC.PROTEIN,), "steps naming a protein"),
    ("medium_serum", (_RC.MEDIUM, _RC.SERUM), "steps naming a culture medium or serum"),
    ("antibiotic", (_RC.ANTIBIOTIC,), "steps naming an antibiotic"),
    ("sugar", (_RC.SUGAR,), "steps naming a sugar or polyol"),
    ("dye", (_RC.DYE,), "steps naming a dye or stain"),
    ("beads", (_RC.BEADS,), "steps naming beads or resin"),
    ("cells", (_RC.CELLS,), "steps naming cells"),
    ("tissue", (_RC.TISSUE,), "steps naming tissue"),
    ("kit_or_other", (_RC.KIT_REAGENT, _RC.OTHER), "steps naming a kit reagent or another reagent"),
)  # fmt: skip

_OR = Organism
ORGANISM_GROUPS = (
    ("human", (_OR.HUMAN,), "human (incl. human cell lines)"),
    ("rodent", (_OR.MOUSE, _OR.RAT), "mouse or rat"),
    ("e_coli", (_OR.E_COLI,), "E. coli"),
    ("other_bacterium", (_OR.OTHER_BACTERIUM,), "another bacterium"),
    ("yeast", (_OR.YEAST,), "yeast"),
    ("plant", (_OR.PLANT,), "plant or alga"),
    ("invertebrate", (_OR.DROSOPHILA, _OR.C_ELEGANS), "Drosophila or C. elegans"),
    ("fish_amphibian", (_OR.ZEBRAFISH, _OR.XENOPUS), "zebrafish or Xenopus"),
    ("virus", (_OR.VIRUS,), "virus or phage"),
    ("other", (_OR.OTHER,), "another named organism"),
    ("unspecified", (_OR.UNSPECIFIED,), "no organism named"),
)  # fmt: skip

_H, _M, _D = 3600.0, 60.0, 86400.0
_DECLARED: tuple[Group, ...] = (
    Group("step_count", "Step count", "number of steps, in log2 bins", "steps", Encoding.ONE_HOT,
          _bins((4, 8, 16, 32, 64, 128), ("1_3", "4_7", "8_15", "16_31", "32_63", "64_127", "128_plus"),
                ("1-3", "4-7", "8-15", "16-31", "32-63", "64-127", "128 or more"), "steps:")),
    Group("step_content", "Step content", "share of steps with a property", "share of steps", Encoding.FRACTION,
          STRUCTURE_MEMBERS["step_content"]),
    Group("diversity", "Diversity", "how many distinct members of a vocabulary the protocol uses", "classes",
          Encoding.COUNT_LEVEL, STRUCTURE_MEMBERS["diversity"], thresholds=DIVERSITY_THRESHOLDS),
    Group("operations", "Operation counts", "number of steps with each canonical operation", "steps",
          Encoding.COUNT_LEVEL, _each(Operation, "steps whose operation is {name}")),
    *(
        Group(f"workflow_{name}_third", f"Workflow, {name} third",
              f"share of the {name} third of the steps (step i of n is in third floor(3i/n)) in each operation family",
              "share of steps", Encoding.FRACTION,
              tuple(Member(family, f"{name} third: {label}", members) for family, members, label in OPERATION_FAMILIES),
              third=position)
        for position, name in enumerate(THIRDS)
    ),
    _histogram(QuantityKind.DURATION, "Duration", "s", (10, _M, 5 * _M, 15 * _M, _H, 4 * _H, 12 * _H, _D),
               ("under_10s", "10s_1min", "1_5min", "5_15min", "15min_1h", "1_4h", "4_12h", "12_24h", "1d_plus"),
               ("< 10 s", "10 s - 1 min", "1-5 min", "5-15 min", "15 min - 1 h", "1-4 h", "4-12 h", "12-24 h",
                ">= 1 day")),
    _histogram(QuantityKind.TEMPERATURE, "Temperature", "degC", (-60, -10, 8, 18, 28, 40, 55, 70, 85, 100),
               ("below_m60", "m60_m10", "m10_8", "8_18", "18_28", "28_40", "40_55", "55_70", "70_85", "85_100",
                "100_plus"),
               ("< -60 degC (deep frozen)", "-60 to -10 degC (frozen)", "-10 to 8 degC (ice, fridge)",
                "8-18 degC (cool)", "18-28 degC (room)", "28-40 degC (body)", "40-55 degC", "55-70 degC",
                "70-85 degC", "85-100 degC (boiling)", ">= 100 degC")),
    _histogram(QuantityKind.VOLUME, "Volume", "uL", (1, 10, 100, 1e3, 1e4, 1e5, 1e6),
               ("under_1ul", "1_10ul", "10_100ul", "100ul_1ml", "1_10ml", "10_100ml", "100ml_1l", "1l_plus"),
               ("< 1 uL", "1-10 uL", "10-100 uL", "0.1-1 mL", "1-10 mL", "10-100 mL", "0.1-1 L", ">= 1 L")),
    _histogram(QuantityKind.MASS, "Mass", "ug", (1, 1e3, 1e6),
               ("under_1ug", "1ug_1mg", "1mg_1g", "1g_plus"), ("< 1 ug", "1 ug - 1 mg", "1 mg - 1 g", ">= 1 g")),
    _histogram(QuantityKind.SPEED_RPM, "Speed (rpm)", "rpm", (1e3, 3e3, 8e3, 15e3),
               ("under_1k", "1k_3k", "3k_8k", "8k_15k", "15k_plus"),
               ("< 1,000 rpm", "1,000-3,000 rpm", "3,000-8,000 rpm", "8,000-15,000 rpm", ">= 15,000 rpm")),
    _histogram(QuantityKind.SPEED_RCF, "Speed (x g)", "xg", (1e3, 3e3, 8e3, 15e3, 50e3),
               ("under_1k", "1k_3k", "3k_8k", "8k_15k", "15k_50k", "50k_plus"),
               ("< 1,000 xg", "1,000-3,000 xg", "3,000-8,000 xg", "8,000-15,000 xg", "15,000-50,000 xg",
                ">= 50,000 xg (ultracentrifuge)")),
    _histogram(QuantityKind.CONCENTRATION_MOLAR, "Molar concentration", "mM", (1, 10, 100, 1e3),
               ("under_1mm", "1_10mm", "10_100mm", "100mm_1m", "1m_plus"),
               ("< 1 mM", "1-10 mM", "10-100 mM", "0.1-1 M", ">= 1 M")),
    _histogram(QuantityKind.CONCENTRATION_PERCENT, "Percent concentration", "percent", (1, 10, 50),
               ("under_1", "1_10", "10_50", "50_plus"), ("< 1 %", "1-10 %", "10-50 %", ">= 50 %")),
    _histogram(QuantityKind.CONCENTRATION_MASS_PER_VOLUME, "Mass concentration", "mg/mL", (0.1, 10),
               ("under_0p1", "0p1_10", "10_plus"), ("< 0.1 mg/mL", "0.1-10 mg/mL", ">= 10 mg/mL")),
    _histogram(QuantityKind.CONCENTRATION_FOLD, "Fold concentration", "x", (1.5, 10),
               ("under_1p5x", "1p5x_10x", "10x_plus"), ("< 1.5x (working)", "1.5x-10x", ">= 10x (stock)")),
    _histogram(QuantityKind.PH, "pH", "pH", (6, 7.5, 9),
               ("under_6", "6_7p5", "7p5_9", "9_plus"), ("< 6", "6-7.5", "7.5-9", ">= 9"), noun="pH"),
    _histogram(QuantityKind.CYCLES, "Cycles and repeats", "count", (4, 16),
               ("1_3", "4_15", "16_plus"), ("1-3", "4-15", ">= 16 (thermocycling)")),
    Group("other_quantities", "Other quantities", "number of stated quantities of rarer kinds", "quantities",
          Encoding.COUNT_LEVEL,
          _each((QuantityKind.RELATIVE_VOLUME, QuantityKind.RATIO, QuantityKind.ENZYME_ACTIVITY),
                "stated {name} quantities")),
    Group("handling", "Handling conditions", "number of quantities stated in each manner", "quantities",
          Encoding.COUNT_LEVEL, HANDLING_MEMBERS),
    Group("equipment", "Equipment", "whether any step names the equipment class", "presence", Encoding.PRESENCE,
          _grouped(EQUIPMENT_GROUPS)),
    Group("labware", "Labware", "whether any step names the labware class", "presence", Encoding.PRESENCE,
          _grouped(LABWARE_GROUPS)),
    Group("reagents", "Reagent classes", "number of steps naming the reagent class", "steps", Encoding.COUNT_LEVEL,
          _grouped(REAGENT_GROUPS)),
    Group("domain", "Domain", "the protocol's domain", "one-hot", Encoding.ONE_HOT,
          _each(Domain, "domain is {name}")),
    Group("organism", "Organism", "the protocol's organism", "one-hot", Encoding.ONE_HOT,
          _grouped(ORGANISM_GROUPS)),
    Group("sample_type", "Sample type", "the first sample-like material class named, in step order", "one-hot",
          Encoding.ONE_HOT, SAMPLE_TYPES),
)  # fmt: skip


# ---------------------------------------------------------------- assembly and checks


class LayoutError(RuntimeError):
    """The declared layout breaks one of its rules (a programming error, found at import)."""


def _assemble(declared: Sequence[Group]) -> tuple[tuple[Group, ...], tuple[Feature, ...]]:
    groups: list[Group] = []
    features: list[Feature] = []
    start = 0
    for group in declared:
        placed = replace(group, start=start)
        groups.append(placed)
        for offset, member in enumerate(placed.members):
            features.append(Feature(start + offset, f"{placed.key}.{member.name}", placed, member))
        start = placed.stop
    return tuple(groups), tuple(features)


GROUPS, FEATURES = _assemble(_DECLARED)
GROUP_BY_KEY = {group.key: group for group in GROUPS}


def _check_partition(vocabulary: type[Enum], members: Iterable[Member], where: str) -> None:
    counted = [selected for member in members for selected in member.selects]
    missing = [m.value for m in vocabulary if m not in counted]
    twice = sorted({m.value for m in counted if counted.count(m) > 1})
    if missing or twice:
        raise LayoutError(
            f"{where}: every {vocabulary.__name__} must be counted once (missing {missing}, twice {twice})"
        )


def _check() -> None:
    if len(FEATURES) != FEATURE_DIM:
        raise LayoutError(f"the layout declares {len(FEATURES)} features, the contract needs {FEATURE_DIM}")
    names = [f.name for f in FEATURES]
    if len(set(names)) != len(names):
        raise LayoutError(f"duplicate feature names: {sorted({n for n in names if names.count(n) > 1})}")
    group_keys = [g.key for g in GROUPS]
    if len(set(group_keys)) != len(group_keys):
        raise LayoutError("duplicate group keys")
    _check_partition(Operation, GROUP_BY_KEY["operations"].members, "operations")
    for third in THIRDS:
        _check_partition(Operation, GROUP_BY_KEY[f"workflow_{third}_third"].members, f"workflow_{third}_third")
    histogram_kinds = [g.kind for g in GROUPS if g.kind is not None]
    other_kinds = [k for m in GROUP_BY_KEY["other_quantities"].members for k in m.selects]
    if sorted(histogram_kinds + other_kinds) != sorted(QuantityKind):  # type: ignore[type-var]
        raise LayoutError("every quantity kind needs exactly one histogram or an `other_quantities` feature")
    for group in (g for g in GROUPS if g.kind is not None or g.key == "step_count"):
        edges, members = group.edges, group.members
        contiguous = all(a.high == b.low for a, b in zip(members, members[1:], strict=False))
        open_ends = members[0].low is None and members[-1].high is None
        increasing = list(edges) == sorted(set(edges)) and all(math.isfinite(e) for e in edges)
        if len(edges) != len(members) - 1 or not (contiguous and open_ends and increasing):
            raise LayoutError(f"{group.key}: bins must be contiguous, open-ended and between increasing finite edges")
    _check_partition(EquipmentClass, GROUP_BY_KEY["equipment"].members, "equipment")
    _check_partition(LabwareClass, GROUP_BY_KEY["labware"].members, "labware")
    _check_partition(ReagentClass, GROUP_BY_KEY["reagents"].members, "reagents")
    _check_partition(Domain, GROUP_BY_KEY["domain"].members, "domain")
    _check_partition(Organism, GROUP_BY_KEY["organism"].members, "organism")


_check()


# ---------------------------------------------------------------- access


def feature_names() -> list[str]:
    """The 223 feature names in index order (`operations.centrifuge`, `duration.5_15min`, ...)."""
    return [feature.name for feature in FEATURES]


def group_ranges() -> dict[str, range]:
    """Index range of every group, in layout order."""
    return {group.key: range(group.start, group.stop) for group in GROUPS}


def feature(name_or_index: str | int) -> Feature:
    """One feature by name or index; KeyError / IndexError names what was asked for."""
    if isinstance(name_or_index, int):
        if not 0 <= name_or_index < len(FEATURES):
            raise IndexError(f"feature index {name_or_index} is outside 0-{len(FEATURES) - 1}")
        return FEATURES[name_or_index]
    try:
        return _BY_NAME[name_or_index]
    except KeyError:
        raise KeyError(f"no feature named {name_or_index!r}") from None


_BY_NAME = {f.name: f for f in FEATURES}

__all__ = [
    "COUNT_THRESHOLDS",
    "DIVERSITY_THRESHOLDS",
    "FEATURES",
    "FEATURE_SCHEMA_VERSION",
    "GROUPS",
    "GROUP_BY_KEY",
    "Encoding",
    "Feature",
    "Group",
    "LayoutError",
    "Member",
    "feature",
    "feature_names",
    "group_ranges",
]
