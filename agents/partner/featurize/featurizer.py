"""ProtocolSpec -> FeatureVector: 223 coarse float32 values computed from the spec alone.

The featurizer never sees protocol text: its only input is a ProtocolSpec, whose fields are
closed-vocabulary members and normalised numbers. From those it keeps only what the layout
(`layout.py`) declares: one-hot bins, presence flags, capped log2 count levels and shares of
steps rounded to eighths. An exact quantity only chooses a bin and an exact count only chooses
a level, so no value can act as a fingerprint finer than its bin; there are no hashed tokens and
no embeddings of text. The vector depends on nothing but the spec (no clock, no randomness, no
order of dict iteration), so the same spec always gives the same bytes.
"""

from __future__ import annotations

import numpy as np

from mshale_fl.agents.partner.featurize.bins import (
    bin_index,
    count_level,
    fraction,
    on_grid,
    representative,
    snap,
)
from mshale_fl.agents.partner.featurize.layout import (
    FEATURES,
    GROUP_BY_KEY,
    GROUPS,
    HANDLING_MEMBERS,
    SAMPLE_TYPES,
    STRUCTURE_MEMBERS,
    Encoding,
    Group,
    LayoutError,
    feature_names,
)
from mshale_fl.schemas.feature_vector import FEATURE_DIM, FeatureVector
from mshale_fl.schemas.protocol_spec import ProtocolSpec, Quantity
from mshale_fl.schemas.vocabulary import QuantityKind

# ---------------------------------------------------------------- lookup tables built from the layout


def _member_offsets(group: Group) -> dict:
    """Vocabulary member -> offset of the feature counting it within its group."""
    return {selected: offset for offset, member in enumerate(group.members) for selected in member.selects}


_OPERATIONS = GROUP_BY_KEY["operations"]
_OPERATION_OFFSET = _member_offsets(_OPERATIONS)
_WORKFLOW = sorted((g for g in GROUPS if g.third is not None), key=lambda g: g.third or 0)
_FAMILY_OFFSET = _member_offsets(_WORKFLOW[0])
_HISTOGRAMS: dict[QuantityKind, Group] = {g.kind: g for g in GROUPS if g.kind is not None}
_HISTOGRAM_EDGES = {kind: group.edges for kind, group in _HISTOGRAMS.items()}
_OTHER_QUANTITIES = GROUP_BY_KEY["other_quantities"]
_OTHER_KIND_OFFSET = _member_offsets(_OTHER_QUANTITIES)
_HANDLING = GROUP_BY_KEY["handling"]
_EQUIPMENT = GROUP_BY_KEY["equipment"]
_EQUIPMENT_OFFSET = _member_offsets(_EQUIPMENT)
_LABWARE = GROUP_BY_KEY["labware"]
_LABWARE_OFFSET = _member_offsets(_LABWARE)
_REAGENTS = GROUP_BY_KEY["reagents"]
_REAGENT_OFFSET = _member_offsets(_REAGENTS)
_DOMAIN = GROUP_BY_KEY["domain"]
_DOMAIN_OFFSET = _member_offsets(_DOMAIN)
_ORGANISM = GROUP_BY_KEY["organism"]
_ORGANISM_OFFSET = _member_offsets(_ORGANISM)
_SAMPLE = GROUP_BY_KEY["sample_type"]
_SAMPLE_ORDER = [(offset, member.selects[0]) for offset, member in enumerate(SAMPLE_TYPES) if member.selects]
_SAMPLE_NONE = next(offset for offset, member in enumerate(SAMPLE_TYPES) if not member.selects)

# ---------------------------------------------------------------- handling conditions

ON_ICE_DEGC = (-10.0, 4.0)  # closed interval
ROOM_TEMPERATURE_DEGC = (18.0, 28.0)  # half-open
OVERNIGHT_S = (8 * 3600.0, 24 * 3600.0)  # closed interval


def handling_condition(quantity: Quantity) -> str | None:
    """Which `handling` feature a quantity counts towards, if any (see HANDLING_MEMBERS)."""
    if quantity.approx:
        value = snap(representative(quantity))
        if quantity.kind is QuantityKind.TEMPERATURE and ON_ICE_DEGC[0] <= value <= ON_ICE_DEGC[1]:
            return "on_ice"
        room_low, room_high = ROOM_TEMPERATURE_DEGC
        if quantity.kind is QuantityKind.TEMPERATURE and room_low <= value < room_high:
            return "room_temperature"
        if quantity.kind is QuantityKind.DURATION and OVERNIGHT_S[0] <= value <= OVERNIGHT_S[1]:
            return "overnight"
        return "other_approximate"
    if quantity.min is not None and quantity.max is not None:
        return "ranges"
    return None


_HANDLING_OFFSET = {member.name: offset for offset, member in enumerate(HANDLING_MEMBERS)}
_HANDLING_CONDITIONS = frozenset({"on_ice", "room_temperature", "overnight", "other_approximate", "ranges"})
# What the featurizer computes for the structure groups (by member name); checked against the layout below.
_STEP_CONTENT_COMPUTED = frozenset({"with_quantities", "with_several_quantities", "with_classes"})
_DIVERSITY_COMPUTED = frozenset({"operations", "reagent_classes", "equipment_labware_classes"})


def _check_against_layout() -> None:
    expectations = {
        "handling": (set(_HANDLING_OFFSET), _HANDLING_CONDITIONS),
        "step_content": ({m.name for m in STRUCTURE_MEMBERS["step_content"]}, _STEP_CONTENT_COMPUTED),
        "diversity": ({m.name for m in STRUCTURE_MEMBERS["diversity"]}, _DIVERSITY_COMPUTED),
    }
    for key, (declared, computed) in expectations.items():
        if declared != computed:
            raise LayoutError(
                f"{key}: the layout declares {sorted(declared)}, the featurizer computes {sorted(computed)}"
            )
    if len(_WORKFLOW) != 3 or any(_member_offsets(g) != _FAMILY_OFFSET for g in _WORKFLOW):
        raise LayoutError("the three workflow groups must list the same operation families in the same order")
    handled = {"step_count", "step_content", "diversity", "operations", "other_quantities", "handling", "equipment",
               "labware", "reagents", "domain", "organism", "sample_type"}  # fmt: skip
    unhandled = [g.key for g in GROUPS if g.key not in handled and g.kind is None and g.third is None]
    if unhandled:
        raise LayoutError(f"the featurizer computes no values for groups {unhandled}")


_check_against_layout()

# ---------------------------------------------------------------- the featurizer


def feature_values(spec: ProtocolSpec) -> np.ndarray:
    """The 223 feature values of a spec as a float32 array (see `layout.py` for each index)."""
    values = [0.0] * FEATURE_DIM  # a list while filling: item assignment on a numpy array is slower
    steps = spec.steps
    total = len(steps)

    operation_counts = [0] * len(_OPERATIONS.members)
    family_counts = [[0] * len(_WORKFLOW[0].members) for _ in _WORKFLOW]
    third_sizes = [0, 0, 0]
    histogram_counts = {kind: [0] * len(group.members) for kind, group in _HISTOGRAMS.items()}
    other_kind_counts = [0] * len(_OTHER_QUANTITIES.members)
    handling_counts = [0] * len(_HANDLING.members)
    equipment_seen = [False] * len(_EQUIPMENT.members)
    labware_seen = [False] * len(_LABWARE.members)
    reagent_steps = [0] * len(_REAGENTS.members)
    content = {"with_quantities": 0, "with_several_quantities": 0, "with_classes": 0}
    operations_used, reagents_used, equipment_labware_used = set(), set(), set()
    sample_offset: int | None = None

    for position, step in enumerate(steps):
        operation_counts[_OPERATION_OFFSET[step.operation]] += 1
        operations_used.add(step.operation)
        third = 3 * position // total
        third_sizes[third] += 1
        family_counts[third][_FAMILY_OFFSET[step.operation]] += 1

        quantities = step.quantities
        content["with_quantities"] += bool(quantities)
        content["with_several_quantities"] += len(quantities) >= 2
        for quantity in quantities:
            edges = _HISTOGRAM_EDGES.get(quantity.kind)
            if edges is not None:
                histogram_counts[quantity.kind][bin_index(representative(quantity), edges)] += 1
            else:
                other_kind_counts[_OTHER_KIND_OFFSET[quantity.kind]] += 1
            condition = handling_condition(quantity)
            if condition is not None:
                handling_counts[_HANDLING_OFFSET[condition]] += 1

        content["with_classes"] += bool(step.equipment or step.labware or step.reagents)
        for equipment in step.equipment:
            equipment_seen[_EQUIPMENT_OFFSET[equipment]] = True
            equipment_labware_used.add(equipment)
        for labware in step.labware:
            labware_seen[_LABWARE_OFFSET[labware]] = True
            equipment_labware_used.add(labware)
        for offset in {_REAGENT_OFFSET[reagent] for reagent in step.reagents}:
            reagent_steps[offset] += 1
        reagents_used.update(step.reagents)
        if sample_offset is None and step.reagents:
            named = set(step.reagents)
            sample_offset = next((offset for offset, reagent in _SAMPLE_ORDER if reagent in named), None)

    distinct = {
        "operations": len(operations_used),
        "reagent_classes": len(reagents_used),
        "equipment_labware_classes": len(equipment_labware_used),
    }

    step_count = GROUP_BY_KEY["step_count"]
    values[step_count.start + bin_index(total, step_count.edges)] = 1.0
    content_group = GROUP_BY_KEY["step_content"]
    for offset, member in enumerate(content_group.members):
        values[content_group.start + offset] = fraction(content[member.name], total)
    diversity = GROUP_BY_KEY["diversity"]
    for offset, member in enumerate(diversity.members):
        values[diversity.start + offset] = count_level(distinct[member.name], diversity.thresholds)

    _levels(values, _OPERATIONS, operation_counts)
    for group in _WORKFLOW:
        third = group.third
        assert third is not None
        for offset, count in enumerate(family_counts[third]):
            values[group.start + offset] = fraction(count, third_sizes[third])
    for kind, group in _HISTOGRAMS.items():
        _levels(values, group, histogram_counts[kind])
    _levels(values, _OTHER_QUANTITIES, other_kind_counts)
    _levels(values, _HANDLING, handling_counts)
    for offset, seen in enumerate(equipment_seen):
        values[_EQUIPMENT.start + offset] = float(seen)
    for offset, seen in enumerate(labware_seen):
        values[_LABWARE.start + offset] = float(seen)
    _levels(values, _REAGENTS, reagent_steps)
    values[_DOMAIN.start + _DOMAIN_OFFSET[spec.domain]] = 1.0
    values[_ORGANISM.start + _ORGANISM_OFFSET[spec.organism]] = 1.0
    values[_SAMPLE.start + (_SAMPLE_NONE if sample_offset is None else sample_offset)] = 1.0
    return np.array(values, dtype=np.float32)


def _level_table(thresholds: tuple[int, ...]) -> tuple[float, ...]:
    """count_level for every count up to the cap (the last threshold), so a count is one lookup."""
    return tuple(count_level(count, thresholds) for count in range(thresholds[-1] + 1))


_LEVEL_TABLES = {g.key: _level_table(g.thresholds) for g in GROUPS if g.encoding is Encoding.COUNT_LEVEL}


def _levels(values: list[float], group: Group, counts: list[int]) -> None:
    table = _LEVEL_TABLES[group.key]
    cap = len(table) - 1
    start = group.start
    for offset, count in enumerate(counts):
        if count:
            values[start + offset] = table[count if count < cap else cap]


def featurize(spec: ProtocolSpec) -> FeatureVector:
    """The spec's FeatureVector: 223 values in the documented layout, keyed by the spec's salted hash."""
    return FeatureVector(spec_hash=spec.content_hash, values=feature_values(spec).tolist())


def featurize_many(specs: list[ProtocolSpec]) -> list[FeatureVector]:
    return [featurize(spec) for spec in specs]


def named_values(vector: FeatureVector) -> list[tuple[str, float]]:
    """(feature name, value) for every index, for display (`inspect --show-features`)."""
    return list(zip(feature_names(), vector.values, strict=True))


def grid_violations(values: list[float] | np.ndarray) -> list[str]:
    """Why a list of values is not a vector this layout can produce: wrong length, non-finite,
    outside [0, 1], or off its feature's grid (finer than a bin, level or eighth); empty if fine."""
    if len(values) != FEATURE_DIM:
        return [f"a feature vector has {FEATURE_DIM} values, not {len(values)}"]
    problems = []
    for feature, raw in zip(FEATURES, values, strict=True):
        try:
            value = float(raw)
        except (TypeError, ValueError):
            problems.append(f"{feature.name} (index {feature.index}) is not a number")
            continue
        if not np.isfinite(value):
            problems.append(f"{feature.name} (index {feature.index}) is not finite")
        elif not feature.low <= value <= feature.high:
            where = f"{feature.name} (index {feature.index}) = {value}"
            problems.append(f"{where} is outside [{feature.low}, {feature.high}]")
        elif not on_grid(value, feature.grid):
            problems.append(f"{feature.name} (index {feature.index}) = {value} is not a multiple of 1/{feature.grid}")
    for group in GROUPS:
        if group.encoding is Encoding.ONE_HOT and not problems:
            ones = sum(float(v) == 1.0 for v in values[group.start : group.stop])
            if ones != 1:
                problems.append(f"{group.key} (indices {group.start}-{group.stop - 1}) is one-hot but has {ones} ones")
    return problems
