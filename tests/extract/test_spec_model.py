"""The ProtocolSpec contract as the extractor uses it: strict, closed, classes listed once."""

from __future__ import annotations

import json

import pytest
from mshale_fl.agents.partner.extract.pipeline import extract_spec
from mshale_fl.agents.partner.extract.reader import Protocol
from mshale_fl.schemas.protocol_spec import ProtocolSpec, Step
from mshale_fl.schemas.vocabulary import LabwareClass, Operation, QuantityKind
from pydantic import ValidationError

PROTOCOL = Protocol(
    "p.txt",
    "E. coli miniprep",
    (
        "Centrifuge 1.5 ml overnight culture in a microcentrifuge tube at 14,000 x g for 1 min.",
        "Resuspend the pellet in 250 µl buffer P1 and mix by pipetting.",
        "Do not vortex.",
        "Add 350 µl of 70% ethanol and spin for 1-2 min at room temperature.",
    ),
)


def test_extracted_spec_reads_like_the_protocol() -> None:
    spec = extract_spec(PROTOCOL, b"s" * 32).spec
    # "mix by pipetting" is one mix step; "Do not vortex." is a caution, not a step
    assert [s.operation for s in spec.steps] == [Operation.CENTRIFUGE, Operation.RESUSPEND, Operation.MIX,
                                                 Operation.ADD, Operation.CENTRIFUGE]  # fmt: skip
    first, _, _, _, spin = spec.steps
    assert [(q.kind, q.value) for q in first.quantities] == [  # in text order; "overnight culture" is no time
        (QuantityKind.VOLUME, 1500.0), (QuantityKind.SPEED_RCF, 14000.0), (QuantityKind.DURATION, 60.0)]  # fmt: skip
    assert LabwareClass.MICROTUBE in first.labware and not first.equipment  # the tube is labware, not a device
    assert [(q.kind, q.min, q.max) for q in spin.quantities] == [
        (QuantityKind.DURATION, 60.0, 120.0), (QuantityKind.TEMPERATURE, 20.0, 25.0)]  # fmt: skip
    assert spin.quantities[1].approx
    assert spec.organism.value == "e_coli"
    for step in spec.steps:
        for classes in (step.equipment, step.labware, step.reagents):
            if classes:
                order = list(type(classes[0]))
                assert classes == sorted(set(classes), key=order.index)  # sorted, unique: deterministic


def test_a_class_listed_twice_or_an_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="more than once"):
        Step(operation=Operation.ADD, labware=[LabwareClass.TUBE, LabwareClass.TUBE])
    spec = extract_spec(PROTOCOL, b"s" * 32).spec
    data = json.loads(spec.model_dump_json())
    data["steps"][0]["note"] = "add the secret enhancer"
    with pytest.raises(ValidationError, match="note"):
        ProtocolSpec.model_validate(data)
    data = json.loads(spec.model_dump_json())
    data["steps"][0]["operation"] = "secret enhancer step"
    with pytest.raises(ValidationError, match="operation"):
        ProtocolSpec.model_validate(data)
