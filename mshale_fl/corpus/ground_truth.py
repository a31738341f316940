"""The hidden ground truth: a protocol's expected outcome as a function of its 223 features.

    logit = bias + sum_i w_i * x[f_i] + sum_j v_j * x[a_j] * x[b_j]
    outcome = round(sigmoid(logit + e), 3),   e ~ N(0, noise)

`x` is the feature vector (agents/partner/featurize) of the protocol's *intended* spec, the one its
template meant (`protocol.Draft.intended_spec`); a model sees the vector the extractor recovers
from the text, which agrees on these features for nearly every protocol (`fidelity.py`, and the
tests measure it), so the function is learnable from what a partner really has.

Which features. Only groups the intended spec determines exactly (`RECOVERED_GROUPS`: operations,
quantities, handling, step count, domain), never equipment, labware or reagent classes, which
templates do not annotate. The effects are lab lore, each with its direction fixed and its reason
given (`MAIN_EFFECTS`, `INTERACTIONS`), plus a bias per spec domain; the seed draws their sizes.
Weights are then scaled so the logit has standard deviation `LOGIT_SPREAD` over a reference sample
of protocols (every domain, many lab habits and styles) and the bias set so that its mean logit
is logit(`MEAN_OUTCOME`): outcomes spread over most of [0, 1] whatever the seed, and the noise
leaves most of the variance explainable.

Hidden means: the parameters are written only with `--reveal-ground-truth`, to `_ground_truth.json`
beside (never inside) the partner folders. The manifest records the seed, and the seed with this
code regenerates the function: treat the seed as secret as the function when evaluating.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mshale_fl.agents.partner.featurize import FEATURES, feature, feature_values
from mshale_fl.corpus.domains import DOMAINS
from mshale_fl.corpus.phrases import STYLE_CHOICES, Style
from mshale_fl.corpus.protocol import Habits, Writer

RECOVERED_GROUPS = frozenset({
    "step_count", "step_content", "operations", "workflow_first_third", "workflow_middle_third",
    "workflow_last_third", "duration", "temperature", "volume", "mass", "speed_rpm", "speed_rcf",
    "concentration_molar", "concentration_percent", "concentration_mass_per_volume", "concentration_fold",
    "ph", "cycles", "other_quantities", "handling", "domain",
})  # fmt: skip
"""Feature groups that depend only on a spec's operations, quantities and domain."""

MAIN_EFFECTS: tuple[tuple[str, int, str], ...] = (
    ("handling.on_ice", +1, "samples kept on ice degrade less"),
    ("handling.overnight", +1, "long, gentle incubations (ligation, antibodies, coating, lysis) run to completion"),
    ("handling.room_temperature", -1, "steps left at room temperature where the cold would do"),
    ("operations.wash", +1, "more washing gives cleaner products and lower background"),
    ("operations.measure", +1, "labs that check intermediate results catch failures early"),
    ("temperature.40_55", -1, "annealing below 55 degC primes off-target products"),
    ("temperature.8_18", +1, "low-temperature ligation and protein induction"),
    ("temperature.below_m60", +1, "storage at -80 degC keeps RNA, proteins and competent cells"),
    ("duration.1d_plus", -1, "transfected cells harvested after more than a day overgrow"),
    ("speed_rcf.1k_3k", -1, "live cells spun at 1,000 x g or more lose viability"),
    ("cycles.4_15", +1, "four or more repeats (washes, sonication pulses) finish the job"),
    ("step_count.16_31", +1, "detailed protocols leave less to chance"),
)
"""(feature, direction, why): main effects; the seed draws each size from MAIN_SIZE."""

INTERACTIONS: tuple[tuple[str, str, int, str], ...] = (
    ("domain.molecular_biology", "handling.on_ice", +1, "nucleic acids profit most from cold handling"),
    ("domain.immunology", "cycles.4_15", +1, "thorough washing matters most in antibody assays"),
    ("handling.overnight", "temperature.m10_8", +1, "overnight steps do best at 4 degC"),
    ("domain.cell_culture", "operations.measure", +1, "checking and counting cells before seeding"),
)
"""(feature a, feature b, direction, why): effects of a * b; sizes from INTERACTION_SIZE."""

MAIN_SIZE = (0.5, 1.5)
INTERACTION_SIZE = (2.0, 4.0)  # products of count levels are small (0.25 * 0.5), so their weights are larger
DOMAIN_BIAS_SD = 0.5
LOGIT_SPREAD = 1.5
MEAN_OUTCOME = 0.6
NOISE = 0.3  # standard deviation of the logit noise
REFERENCE_PER_DOMAIN = 12


def _check(name: str) -> int:
    found = feature(name)  # KeyError names an unknown feature
    if found.group.key not in RECOVERED_GROUPS:
        raise ValueError(f"ground truth feature {name} is in group {found.group.key}, which intended specs do not determine")
    return found.index


@dataclass(frozen=True)
class Term:
    features: tuple[str, ...]  # one name: a main effect or domain bias; two: an interaction (their product)
    weight: float
    why: str

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(_check(name) for name in self.features)


@dataclass(frozen=True)
class GroundTruth:
    seed: int
    bias: float
    terms: tuple[Term, ...]
    noise: float = NOISE

    def logits(self, features: np.ndarray) -> np.ndarray:
        """The noiseless logit of each row of `features` ([n, 223] or [223])."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        total = np.full(x.shape[0], self.bias)
        for term in self.terms:
            total += term.weight * np.prod(x[:, list(term.indices)], axis=1)
        return total

    def expected(self, features: np.ndarray) -> np.ndarray:
        """The noiseless outcome sigmoid(logit) of each row."""
        return 1.0 / (1.0 + np.exp(-self.logits(features)))

    def outcome(self, features: np.ndarray, rng: random.Random) -> float:
        """One protocol's observed outcome: the logit plus noise, through the sigmoid, to 3 decimals."""
        logit = float(self.logits(features)[0]) + rng.gauss(0.0, self.noise)
        return round(1.0 / (1.0 + math.exp(-logit)), 3)

    def as_dict(self) -> dict[str, object]:
        return {
            "formula": "outcome = round(sigmoid(bias + sum(weight * product(x[f] for f in features)) + e), 3), "
                       "e ~ N(0, noise); x = the 223 features of the protocol's intended spec",
            "seed": self.seed,
            "bias": round(self.bias, 6),
            "noise": self.noise,
            "terms": [{"features": list(t.features), "indices": list(t.indices), "weight": round(t.weight, 6),
                       "why": t.why} for t in self.terms],
        }  # fmt: skip


def _reference_features(rng: random.Random) -> np.ndarray:
    """Intended features of REFERENCE_PER_DOMAIN protocols per domain, written by labs of random habits and styles."""
    rows = []
    for key in DOMAINS:
        for _ in range(REFERENCE_PER_DOMAIN):
            style = Style(**{name: rng.choice(options) for name, options in STYLE_CHOICES.items()},  # type: ignore[arg-type]
                          speed_in_rpm=rng.random() < 0.3)  # fmt: skip
            habits = Habits(rng.random(), rng.random(), rng.random())
            rows.append(feature_values(DOMAINS[key].write(Writer(rng, style, habits)).intended_spec()))
    return np.stack(rows)


def _domain_features() -> Iterable[str]:
    used = {template.spec_domain.value for template in DOMAINS.values()}
    return (f.name for f in FEATURES if f.group.key == "domain" and f.member.name in used)


def draw_ground_truth(seed: int) -> GroundTruth:
    """The ground truth of a seed: effect sizes drawn, then scaled and centred on a reference sample."""
    rng = random.Random(f"mshale-fl ground truth {seed}")
    terms = [Term((name,), sign * rng.uniform(*MAIN_SIZE), why) for name, sign, why in MAIN_EFFECTS]
    terms += [Term((a, b), sign * rng.uniform(*INTERACTION_SIZE), why) for a, b, sign, why in INTERACTIONS]
    terms += [Term((name,), rng.gauss(0.0, DOMAIN_BIAS_SD), "some kinds of work fail more often than others")
              for name in _domain_features()]  # fmt: skip
    raw = GroundTruth(seed, 0.0, tuple(terms))
    logits = raw.logits(_reference_features(rng))
    scale = LOGIT_SPREAD / (statistics.pstdev(logits.tolist()) or 1.0)
    scaled = tuple(Term(t.features, t.weight * scale, t.why) for t in terms)
    bias = math.log(MEAN_OUTCOME / (1 - MEAN_OUTCOME)) - float(np.mean(logits)) * scale
    return GroundTruth(seed, bias, scaled)
