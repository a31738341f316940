"""A synthesized protocol before it is a file: its lines, and the steps each line is meant to say.

A domain template (`domains.py`) writes a protocol line by line through a `Writer`. Each line is
text plus the `IntendedStep`s it states: the canonical operation of every action verb (as the
extractor's action lexicon maps it: `Ligate` is `incubate`, `Trypsinize` is `homogenize`) and the
quantities of the phrases it used. The `Draft` therefore knows its own ProtocolSpec without
parsing anything (`intended_spec`), and the outcome is computed from that spec's features, so
the extractor is a lens on the truth, not its source; `fidelity.py` measures how well it sees.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass, field

from mshale_fl.corpus.phrases import Phrase, Phrases, Style
from mshale_fl.schemas.protocol_spec import ProtocolSpec, Quantity, Step
from mshale_fl.schemas.vocabulary import Domain, Operation, Organism

_NO_HASH = "0" * 64  # the intended spec is never sent; its hash plays no part in features


@dataclass(frozen=True)
class Habits:
    """How a lab tends to work, each a probability in [0, 1] that a template consults at its choices.

    cold: keeps samples on ice, spins and stores cold. thorough: adds checks, extra washes and
    clean-up steps. patient: prefers long and overnight incubations to short ones.
    """

    cold: float = 0.5
    thorough: float = 0.5
    patient: float = 0.5

    def as_dict(self) -> dict[str, float]:
        return {"cold": self.cold, "thorough": self.thorough, "patient": self.patient}


@dataclass(frozen=True)
class IntendedStep:
    operation: Operation
    quantities: tuple[Quantity, ...] = ()


@dataclass(frozen=True)
class Line:
    text: str
    steps: tuple[IntendedStep, ...]


@dataclass(frozen=True)
class Draft:
    """One protocol as the template meant it: title, lines with their steps, domain and organism."""

    domain: str  # the synthesizer's domain key (`pcr`, `western_blot`, ...)
    title: str
    lines: tuple[Line, ...]
    spec_domain: Domain  # the ProtocolSpec domain the text's cues should give
    organism: Organism

    @property
    def steps(self) -> tuple[IntendedStep, ...]:
        return tuple(step for line in self.lines for step in line.steps)

    def intended_spec(self) -> ProtocolSpec:
        """The spec this protocol means: operations and quantities in order, domain and organism.

        Equipment, labware and reagent classes are left out: templates do not annotate them, and the
        ground truth reads no feature that depends on them (`ground_truth.RECOVERED_GROUPS`).
        """
        return ProtocolSpec(
            content_hash=_NO_HASH,
            domain=self.spec_domain,
            organism=self.organism,
            steps=[Step(operation=s.operation, quantities=list(s.quantities)) for s in self.steps],
        )


_FORMATTER = string.Formatter()


def _slot_order(template: str) -> list[str]:
    return [name for _, name, _, _ in _FORMATTER.parse(template) if name]


@dataclass
class Writer:
    """What a domain template writes with: the lab's phrases, habits and random choices, and the lines so far."""

    rng: random.Random
    style: Style
    habits: Habits
    lines: list[Line] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.q = Phrases(self.style)

    # ---------------------------------------------------------------- choices

    def choice(self, options: Sequence):
        return options[self.rng.randrange(len(options))]

    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability

    def habit(self, name: str, strength: float = 1.0) -> bool:
        """True with the lab's probability for this habit (`cold`, `thorough`, `patient`), scaled by `strength`."""
        return self.rng.random() < getattr(self.habits, name) * strength

    # ---------------------------------------------------------------- lines

    def step(self, operation: Operation, template: str, **slots: Phrase | str) -> None:
        """A line with one action; every phrase in it belongs to that action."""
        self.line(template, (operation, tuple(_slot_order(template))), **slots)

    def line(self, template: str, *actions: tuple[Operation, tuple[str, ...]], **slots: Phrase | str) -> None:
        """A line with several actions, each naming the slots whose quantities belong to it."""
        names = _slot_order(template)
        missing = [name for name in names if name not in slots]
        if missing:
            raise KeyError(f"template {template!r} has no value for {missing}")
        order = {name: index for index, name in enumerate(names)}
        steps = []
        for operation, owned in actions:
            quantities: list[Quantity] = []
            for name in sorted(owned, key=order.__getitem__):
                value = slots[name]
                if isinstance(value, Phrase):
                    quantities.extend(value.quantities)
            steps.append(IntendedStep(operation, tuple(quantities)))
        unowned = [n for n in names if isinstance(slots[n], Phrase) and slots[n].quantities
                   and not any(n in owned for _, owned in actions)]  # fmt: skip
        if unowned:
            raise ValueError(f"template {template!r}: quantities of {unowned} belong to no action")
        text = template.format(**{k: v.text if isinstance(v, Phrase) else v for k, v in slots.items()})
        self.lines.append(Line(text, tuple(steps)))

    def draft(self, domain: str, title: str, spec_domain: Domain, organism: Organism) -> Draft:
        return Draft(domain, title, tuple(self.lines), spec_domain, organism)
