"""The action lexicon: written verbs (any inflection, phrasal verbs) -> one canonical operation."""

from __future__ import annotations

import pytest
from mshale_fl.agents.partner.extract.actions import find_actions
from mshale_fl.agents.partner.extract.operations import is_negated, lemma, operation_for
from mshale_fl.schemas.vocabulary import Operation as Op


@pytest.mark.parametrize(
    ("written", "operation"),
    [
        ("Add", Op.ADD), ("adding", Op.ADD), ("added", Op.ADD),
        ("Transfer", Op.TRANSFER), ("pipetted", Op.TRANSFER), ("pipet", Op.TRANSFER),
        ("Aliquot", Op.ALIQUOT), ("dispense", Op.ALIQUOT),
        ("Aspirate", Op.REMOVE), ("decant", Op.REMOVE), ("pipette off", Op.REMOVE), ("pour off", Op.REMOVE),
        ("Discard", Op.DISCARD), ("remove and discard", Op.DISCARD),
        ("Mix", Op.MIX), ("inverting", Op.MIX), ("flick", Op.MIX), ("pipette up and down", Op.MIX),
        ("Vortex", Op.VORTEX), ("vortexing", Op.VORTEX),
        ("shake", Op.SHAKE), ("rocking", Op.SHAKE),
        ("Centrifuge", Op.CENTRIFUGE), ("centrifuging", Op.CENTRIFUGE), ("spin down", Op.CENTRIFUGE),
        ("spinning", Op.CENTRIFUGE), ("pellet", Op.CENTRIFUGE), ("pulse spin", Op.CENTRIFUGE),
        ("Incubate", Op.INCUBATE), ("incubated", Op.INCUBATE), ("let sit", Op.INCUBATE), ("grow", Op.INCUBATE),
        ("Heat", Op.HEAT), ("pre-warm", Op.HEAT), ("heat shock", Op.HEAT), ("boil", Op.HEAT),
        ("Chill", Op.COOL), ("cool", Op.COOL),
        ("flash freeze", Op.FREEZE), ("Thaw", Op.THAW),
        ("amplify", Op.THERMOCYCLE),
        ("Wash", Op.WASH), ("rinse", Op.WASH), ("washes", Op.WASH),
        ("Elute", Op.ELUTE), ("precipitate", Op.PRECIPITATE),
        ("air dry", Op.DRY), ("air-dry", Op.DRY), ("speedvac", Op.DRY),
        ("Store", Op.STORE), ("stored", Op.STORE), ("keep", Op.STORE),
        ("Resuspend", Op.RESUSPEND), ("re-suspend", Op.RESUSPEND), ("resuspended", Op.RESUSPEND),
        ("Dilute", Op.DILUTE), ("dissolve", Op.DISSOLVE),
        ("Homogenize", Op.HOMOGENIZE), ("grind", Op.HOMOGENIZE), ("lyse", Op.LYSE), ("sonicate", Op.SONICATE),
        ("filter", Op.FILTER), ("filter sterilize", Op.FILTER),
        ("stain", Op.STAIN), ("inoculate", Op.INOCULATE), ("transform", Op.INOCULATE),
        ("plate", Op.PLATE), ("streak", Op.PLATE), ("seal", Op.SEAL), ("cover", Op.SEAL),
        ("Place", Op.PLACE), ("placing", Op.PLACE), ("put", Op.PLACE),
        ("prepare", Op.PREPARE), ("set up", Op.PREPARE),
        ("measure", Op.MEASURE), ("count", Op.MEASURE), ("quantify", Op.MEASURE),
        ("Repeat", Op.REPEAT), ("wait", Op.WAIT),
        ("frobnicate", Op.OTHER),
    ],
)  # fmt: skip
def test_written_actions_map_to_canonical_operations(written: str, operation: Op) -> None:
    assert operation_for(written) is operation


@pytest.mark.parametrize(
    ("step", "operation"),
    [
        ("Run the samples on a 1% agarose gel", Op.ELECTROPHORESE),
        ("Run the PCR program below", Op.THERMOCYCLE),
        ("Run the reaction overnight", Op.OTHER),
        ("Load 10 µl on the gel", Op.ELECTROPHORESE),
        ("Load 10 µl into the well", Op.TRANSFER),
    ],
)
def test_ambiguous_verbs_use_their_step(step: str, operation: Op) -> None:
    verb = step.split()[0]
    assert operation_for(verb, step) is operation


def test_lemma_folds_inflections_and_rejects_non_actions() -> None:
    assert lemma("Centrifuging") == "centrifuge"
    assert lemma("pipetting") in ("pipette", "pipet")
    assert lemma("Spin\u00a0down") == "spin down"
    assert lemma("tube") is None
    assert lemma("") is None


@pytest.mark.parametrize(
    ("before", "negated"),
    [("Do not ", True), ("Mix gently without ", True), ("Take care not to ", True), ("Gently ", False),
     ("Do not vortex. Then ", False), ("", False)],
)  # fmt: skip
def test_negation_is_seen_only_just_before_the_action(before: str, negated: bool) -> None:
    assert is_negated(before) is negated


def test_the_tagger_finds_imperative_and_inflected_actions() -> None:
    text = "Centrifuge for 1 minute at 14,000xg.\nAdd 200 µl chloroform and mix by inverting the tube."
    found = [text[start:end] for start, end in find_actions(text)]
    assert found[:3] == ["Centrifuge", "Add", "mix"]
    assert "tube" not in found and "chloroform" not in found
