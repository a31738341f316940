"""Featurizer properties on specs: exact values for a known spec, determinism, ranges, caps and bins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mshale_fl.agents.partner.featurize import (
    FEATURE_DIM,
    GROUP_BY_KEY,
    GROUPS,
    Encoding,
    feature,
    feature_names,
    feature_values,
    featurize,
    grid_violations,
    named_values,
)
from mshale_fl.agents.partner.featurize.bins import (
    bin_index,
    count_level,
    fraction,
    representative,
)
from mshale_fl.schemas.feature_vector import FeatureVector
from mshale_fl.schemas.protocol_spec import MAX_STEPS, ProtocolSpec, Quantity, Step
from mshale_fl.schemas.vocabulary import (
    UNIT_OF_KIND,
    Domain,
    EquipmentClass,
    LabwareClass,
    Operation,
    Organism,
    QuantityKind,
    ReagentClass,
)

from .strategies import HASH, specs
from .support import spec_of_text

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def q(kind: QuantityKind, value: float | None = None, low: float | None = None, high: float | None = None,
      approx: bool = False) -> Quantity:  # fmt: skip
    return Quantity(kind=kind, unit=UNIT_OF_KIND[kind], value=value, min=low, max=high, approx=approx)


def nonzero(spec: ProtocolSpec) -> dict[str, float]:
    return {name: value for name, value in named_values(featurize(spec)) if value}


def small_spec() -> ProtocolSpec:
    return ProtocolSpec(
        content_hash=HASH,
        domain=Domain.MOLECULAR_BIOLOGY,
        organism=Organism.RAT,
        steps=[
            Step(operation=Operation.ADD, quantities=[q(QuantityKind.VOLUME, 500.0)],
                 labware=[LabwareClass.MICROTUBE], reagents=[ReagentClass.ACID, ReagentClass.BASE]),
            Step(operation=Operation.CENTRIFUGE, equipment=[EquipmentClass.MICROCENTRIFUGE],
                 quantities=[q(QuantityKind.SPEED_RCF, 12000.0), q(QuantityKind.DURATION, low=600.0, high=900.0)]),
            Step(operation=Operation.INCUBATE, reagents=[ReagentClass.CELLS, ReagentClass.TISSUE],
                 quantities=[q(QuantityKind.TEMPERATURE, 0.0, 0.0, 4.0, approx=True),
                             q(QuantityKind.DURATION, 57600.0, 43200.0, 64800.0, approx=True)]),
            Step(operation=Operation.ADD, reagents=[ReagentClass.ACID]),
        ],
    )  # fmt: skip


def test_a_known_spec_gives_exactly_the_expected_features() -> None:
    assert nonzero(small_spec()) == {
        "step_count.4_7": 1.0,
        "step_content.with_quantities": 0.75,  # 3 of 4 steps
        "step_content.with_several_quantities": 0.5,  # 2 of 4
        "step_content.with_classes": 1.0,
        "diversity.operations": 0.25,  # 3 distinct: level 2-3
        "diversity.reagent_classes": 0.5,  # acid, base, cells, tissue: level 4-7
        "diversity.equipment_labware_classes": 0.25,  # 2
        "operations.add": 0.5,  # 2 steps: level 2-3
        "operations.centrifuge": 0.25,
        "operations.incubate": 0.25,
        # 4 steps: thirds are steps {0, 1}, {2}, {3} (step i of n in third floor(3i/n))
        "workflow_first_third.liquid_handling": 0.5,
        "workflow_first_third.separation": 0.5,
        "workflow_middle_third.temperature_time": 1.0,
        "workflow_last_third.liquid_handling": 1.0,
        "volume.100ul_1ml": 0.25,
        "speed_rcf.8k_15k": 0.25,
        "duration.5_15min": 0.25,  # the 600-900 s range counts at its midpoint, 750 s
        "duration.12_24h": 0.25,
        "temperature.m10_8": 0.25,
        "handling.on_ice": 0.25,
        "handling.overnight": 0.25,
        "handling.ranges": 0.25,
        "equipment.microcentrifuge": 1.0,
        "labware.microtube": 1.0,
        "reagents.acid_base": 0.5,  # two steps name an acid or a base; the first names both but counts once
        "reagents.cells": 0.25,
        "reagents.tissue": 0.25,
        "domain.molecular_biology": 1.0,
        "organism.rodent": 1.0,
        "sample_type.tissue": 1.0,  # step 3 names cells and tissue: tissue is upstream, so it wins
    }


def test_the_vector_carries_the_salted_hash_and_validates_as_the_contract() -> None:
    vector = featurize(small_spec())
    assert isinstance(vector, FeatureVector)
    assert vector.spec_hash == HASH and vector.feature_schema_version == 1
    assert len(vector.values) == FEATURE_DIM
    assert FeatureVector.model_validate_json(vector.model_dump_json()) == vector
    assert np.array_equal(vector.as_array(), feature_values(small_spec()))


@PROPERTY
@given(specs())
def test_random_specs_give_finite_values_inside_their_documented_ranges_and_grids(spec: ProtocolSpec) -> None:
    values = feature_values(spec)
    assert values.dtype == np.float32 and values.shape == (FEATURE_DIM,)
    assert np.isfinite(values).all()
    assert grid_violations(values) == []
    for group in GROUPS:
        part = values[group.start : group.stop]
        assert ((part >= 0) & (part <= 1)).all(), group.key
        if group.encoding is Encoding.ONE_HOT:
            assert sorted(part.tolist())[-1] == 1.0 and part.sum() == 1.0, group.key
    FeatureVector(spec_hash=spec.content_hash, values=values.tolist())  # the contract accepts it


@PROPERTY
@given(specs())
def test_deterministic_and_independent_of_serialisation(spec: ProtocolSpec) -> None:
    first = featurize(spec)
    assert featurize(spec) == first
    assert featurize(ProtocolSpec.model_validate_json(spec.model_dump_json())) == first
    reformatted = json.dumps(json.loads(spec.model_dump_json()), indent=3, sort_keys=True)  # other key order
    assert featurize(ProtocolSpec.model_validate_json(reformatted)) == first


def test_same_bytes_in_fresh_interpreters_with_different_hash_seeds() -> None:
    program = (
        "import sys, hashlib\n"
        "from mshale_fl.schemas.protocol_spec import ProtocolSpec\n"
        "from mshale_fl.agents.partner.featurize import feature_values\n"
        "spec = ProtocolSpec.model_validate_json(sys.stdin.read())\n"
        "print(hashlib.sha256(feature_values(spec).tobytes()).hexdigest())\n"
    )
    spec_json = small_spec().model_dump_json()
    digests = set()
    for seed in ("1", "2", "12345"):
        environment = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", program], input=spec_json, capture_output=True, text=True,
                             env=environment, check=True)  # fmt: skip
        digests.add(run.stdout.strip())
    assert len(digests) == 1


def _repeated(operation: Operation, count: int, **step_fields) -> ProtocolSpec:
    return ProtocolSpec(content_hash=HASH, steps=[Step(operation=operation, **step_fields)] * count)


def test_counts_are_capped() -> None:
    add = feature("operations.add").index
    at_cap = feature_values(_repeated(Operation.ADD, 8))
    for count in (8, 9, 50, 400, MAX_STEPS):
        assert feature_values(_repeated(Operation.ADD, count))[add] == at_cap[add] == 1.0
    assert feature_values(_repeated(Operation.ADD, 7))[add] == 0.75
    # beyond every cap (steps >= 128, every count >= 8) the whole vector is the same
    loaded = {"quantities": [q(QuantityKind.DURATION, 60.0)], "reagents": [ReagentClass.BUFFER]}
    assert np.array_equal(feature_values(_repeated(Operation.ADD, 400, **loaded)),
                          feature_values(_repeated(Operation.ADD, 200, **loaded)))  # fmt: skip
    assert feature_values(_repeated(Operation.ADD, 400))[feature("step_count.128_plus").index] == 1.0


@given(st.integers(min_value=0, max_value=10_000))
def test_count_levels_are_monotone_and_constant_from_the_cap(count: int) -> None:
    thresholds = (0, 1, 2, 4, 8)
    assert count_level(count, thresholds) <= count_level(count + 1, thresholds)
    if count >= 8:
        assert count_level(count, thresholds) == 1.0
    assert count_level(count, thresholds) * 4 == int(count_level(count, thresholds) * 4)


@given(st.integers(min_value=1, max_value=500), st.data())
def test_fractions_round_to_the_nearest_eighth(whole: int, data: st.DataObject) -> None:
    part = data.draw(st.integers(min_value=0, max_value=whole))
    value = fraction(part, whole)
    assert value * 8 == int(value * 8)
    assert abs(value - part / whole) <= 1 / 16 + 1e-12


def test_unit_conversion_noise_does_not_cross_a_bin_edge() -> None:
    edges = GROUP_BY_KEY["volume"].edges
    assert 1.1 * 100 == 110.00000000000001  # what float arithmetic makes of a converted 1.1 mL = 110 uL
    assert bin_index(100.00000000000001, edges) == bin_index(100.0, edges) == 3  # [100, 1000)
    assert bin_index(99.99999999999999, edges) == 3
    assert bin_index(99.9, edges) == 2
    assert representative(q(QuantityKind.VOLUME, low=1.7e308, high=1.7e308)) == 1.7e308  # no overflow


def _same_bin_value(group_edges: tuple[float, ...], value: float, position: float) -> float:
    """Another value in the bin of `value`, `position` (0..1) of the way across it."""
    index = bin_index(value, group_edges)
    low = group_edges[index - 1] if index > 0 else None
    high = group_edges[index] if index < len(group_edges) else None
    if low is None:
        return high - 1 - 10 * position  # type: ignore[operator]
    if high is None:
        return low + 1 + 10 * position
    return low + (high - low) * (0.001 + 0.99 * position)


@PROPERTY
@given(specs(), st.floats(min_value=0.0, max_value=1.0))
def test_quantities_moved_within_their_bins_give_identical_vectors(spec: ProtocolSpec, position: float) -> None:
    """Exact values cannot fingerprint: only the bin of each quantity matters (approximate quantities,
    whose handling feature depends on finer intervals, and open-ended bounds are kept as they are)."""
    histograms = {g.kind: g.edges for g in GROUPS if g.kind is not None}

    def moved(quantity: Quantity) -> Quantity:
        edges = histograms.get(quantity.kind)
        if quantity.approx or quantity.min is not None or quantity.max is not None:
            return quantity
        if edges is None:  # kinds only counted, never binned: any value gives the same feature
            return quantity.model_copy(update={"value": position * 1000})
        assert quantity.value is not None
        return quantity.model_copy(update={"value": _same_bin_value(edges, quantity.value, position)})

    other = spec.model_copy(update={"steps": [s.model_copy(update={"quantities": [moved(x) for x in s.quantities]})
                                              for s in spec.steps]})  # fmt: skip
    assert np.array_equal(feature_values(other), feature_values(spec))


def test_slightly_different_protocol_texts_in_the_same_bins_give_the_same_vector() -> None:
    first = spec_of_text(
        "Miniprep\nIncubate at 37 °C for 10 min.\nAdd 1 ml of buffer.\nSpin at 13,000 x g for 1 min.\n"
    )
    second = spec_of_text(
        "Miniprep\nIncubate at 36 °C for 12 min.\nAdd 1.2 ml of buffer.\nSpin at 14,000 x g for 2 min.\n"
    )
    assert first.steps != second.steps  # the specs hold the exact values ...
    assert np.array_equal(feature_values(first), feature_values(second))  # ... the vectors only their bins


def test_thirds_follow_step_order() -> None:
    steps = [Step(operation=operation) for operation in (Operation.ADD, Operation.MIX, Operation.CENTRIFUGE)
             for _ in range(3)]  # fmt: skip
    values = nonzero(ProtocolSpec(content_hash=HASH, steps=steps))
    assert {k: v for k, v in values.items() if k.startswith("workflow")} == {
        "workflow_first_third.liquid_handling": 1.0,
        "workflow_middle_third.mixing": 1.0,
        "workflow_last_third.separation": 1.0,
    }
    reversed_values = nonzero(ProtocolSpec(content_hash=HASH, steps=steps[::-1]))
    assert reversed_values["workflow_first_third.separation"] == 1.0
    assert {k: v for k, v in values.items() if not k.startswith("workflow")} == {
        k: v for k, v in reversed_values.items() if not k.startswith("workflow")
    }


def test_one_step_protocol_and_sample_type_none() -> None:
    values = nonzero(ProtocolSpec(content_hash=HASH, steps=[Step(operation=Operation.OTHER)]))
    assert values == {
        "step_count.1_3": 1.0,
        "operations.other": 0.25,
        "workflow_first_third.other": 1.0,
        "domain.other": 1.0,
        "organism.unspecified": 1.0,
        "sample_type.none": 1.0,
    }


def test_handling_conditions_from_protocol_text() -> None:
    spec = spec_of_text(
        "Handling\nIncubate on ice for 10 min.\nLeave at room temperature for 5 min.\nGrow overnight at 37 °C.\n"
        "Heat at 55-60 °C for ~5 min.\n"
    )
    values = {name: value for name, value in named_values(featurize(spec)) if name.startswith("handling.")}
    assert values == {
        "handling.on_ice": 0.25,
        "handling.room_temperature": 0.25,
        "handling.overnight": 0.25,
        "handling.other_approximate": 0.25,  # ~5 min
        "handling.ranges": 0.25,  # 55-60 °C
    }


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([0.0] * 222, "has 223 values, not 222"),
        ([float("nan")] + [0.0] * 222, "step_count.1_3 (index 0) is not finite"),
        ([0.0] * 7 + [1.5] + [0.0] * 215, "step_content.with_quantities (index 7) = 1.5 is outside [0.0, 1.0]"),
        ([0.0] * 13 + [0.3] + [0.0] * 209, "operations.add (index 13) = 0.3 is not a multiple of 1/4"),
        ([0.0] * 7 + [0.3] + [0.0] * 215, "step_content.with_quantities (index 7) = 0.3 is not a multiple of 1/8"),
        ([0.0] * 223, "step_count (indices 0-6) is one-hot but has 0 ones"),
    ],
)
def test_grid_violations_name_the_feature_and_the_reason(values: list[float], reason: str) -> None:
    assert any(reason in problem for problem in grid_violations(values)), grid_violations(values)


def test_named_values_follow_feature_names() -> None:
    pairs = named_values(featurize(small_spec()))
    assert [name for name, _ in pairs] == feature_names()


def test_spec_files_written_by_extraction_give_the_in_memory_vectors(tmp_path, shared_dir) -> None:
    """The Tier 2 path reads the Tier 1 spec files: the vector must not depend on that round trip."""
    from mshale_fl.agents.partner.extract import extract_corpus, extract_spec, load_or_create_salt, read_one, read_spec

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sources = sorted((shared_dir / "corpora" / "wlp" / "dev").glob("*.txt"))[:12]
    for source in sources:
        (corpus / source.name).write_bytes(source.read_bytes())
    result = extract_corpus(corpus, tmp_path / "out", tier=2)
    assert len(result.protocols) == len(sources)
    salt = load_or_create_salt(tmp_path / "out")  # the salt the extraction created

    for record in result.protocols:
        from_file = featurize(read_spec(tmp_path / "out" / record["spec"]))
        in_memory = featurize(extract_spec(read_one(corpus / record["source"], corpus), salt).spec)
        assert from_file == in_memory
        assert from_file.spec_hash == record["content_hash"]
        assert grid_violations(from_file.values) == []
