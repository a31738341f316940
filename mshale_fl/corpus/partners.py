"""Synthetic partner labs: what each one works on, how it works and writes, and how it labels.

Real labs differ, and a federation must cope with that, so every partner gets its own profile
drawn from the corpus seed:

- a *domain mix*: Dirichlet weights over the domains (concentration `DOMAIN_CONCENTRATION`,
  small, so a lab focuses on a few kinds of work; weights under `MIN_DOMAIN_WEIGHT` are dropped,
  at least two domains are kept). `draw_profiles` keeps labs apart: a lab's profile is redrawn
  (up to `PROFILE_TRIES` times) until its mix differs from every earlier lab's by a total
  variation of `DISTINCT_MIX`, else the most distinct draw is kept (with many labs, some must
  resemble each other);
- *habits* (`cold`, `thorough`, `patient`), drawn from a U-shaped Beta so labs lean one way or
  the other; they move knobs and optional steps, so they move features and outcomes too;
- a writing *style* (unit spellings, rpm or x g, numbering) and a *format mix* (Markdown, plain
  text, protocols.io v3 and v4 JSON exports);
- a *label mix*: mostly `efficiency` (the protocols it trains on), the rest `published`,
  `internal` and `full-ip`, and how it marks them (a default label, folder rules, front matter).

Agreements: every synthetic lab has signed the DPA and the federated training agreement, so all
of its `efficiency` protocols can train at Tier 3; about half also hold an IRB approval.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mshale_fl.agents.partner.policy import Agreements
from mshale_fl.corpus.domains import DOMAINS
from mshale_fl.corpus.phrases import STYLE_CHOICES, Style
from mshale_fl.corpus.protocol import Habits
from mshale_fl.schemas.vocabulary import Sensitivity

DOMAIN_CONCENTRATION = 0.4
MIN_DOMAIN_WEIGHT = 0.05
DISTINCT_MIX = 0.5  # total variation a lab's domain mix keeps from every earlier lab's, when it can
PROFILE_TRIES = 25
EFFICIENCY_SHARE = (0.55, 0.8)  # range of a lab's share of efficiency protocols
FORMATS = ("markdown", "text", "protocols.io-v3", "protocols.io-v4")
NUMBERING = ("1. ", "1) ", "Step 1: ", "- ", "")
RPM_LABS = 0.3  # share of labs whose centrifuges are set in rpm
LABEL_FOLDERS: dict[Sensitivity, tuple[str, ...]] = {
    Sensitivity.PUBLISHED: ("published", "public", "papers"),
    Sensitivity.INTERNAL: ("internal", "sops", "in-house"),
    Sensitivity.EFFICIENCY: ("optimisation", "runs", "experiments"),
    Sensitivity.FULL_IP: ("proprietary", "confidential", "ip"),
}
"""Folder names a lab may keep each kind of protocol in; its `mshale.toml` labels them by glob rule."""
DEFAULT_LABELS = (Sensitivity.FULL_IP, Sensitivity.EFFICIENCY, Sensitivity.INTERNAL, Sensitivity.PUBLISHED)
DEFAULT_LABEL_WEIGHTS = (0.4, 0.3, 0.2, 0.1)


@dataclass(frozen=True)
class PartnerProfile:
    partner_id: str
    domain_mix: dict[str, float]  # domain key -> weight, summing to 1
    habits: Habits
    style: Style
    numbering: str
    formats: dict[str, float]  # format -> weight
    label_mix: dict[Sensitivity, float]
    default_label: Sensitivity
    folders: dict[Sensitivity, str]
    agreements: Agreements

    def as_dict(self) -> dict[str, object]:
        return {
            "partner_id": self.partner_id,
            "domain_mix": {k: round(v, 4) for k, v in self.domain_mix.items()},
            "habits": {k: round(v, 4) for k, v in self.habits.as_dict().items()},
            "style": {**self.style.as_dict(), "numbering": self.numbering},
            "format_mix": {k: round(v, 4) for k, v in self.formats.items()},
            "label_mix": {k.value: round(v, 4) for k, v in self.label_mix.items()},
            "default_label": self.default_label.value,
            "label_folders": {k.value: v for k, v in self.folders.items()},
            "agreements": {"dpa": self.agreements.dpa, "irb": self.agreements.irb,
                           "federated_training": self.agreements.federated_training},  # fmt: skip
        }


def _dirichlet(rng: random.Random, keys: tuple[str, ...], concentration: float) -> dict[str, float]:
    draws = [rng.gammavariate(concentration, 1.0) for _ in keys]
    total = sum(draws) or 1.0
    return {key: draw / total for key, draw in zip(keys, draws, strict=True)}


def _focus(weights: dict[str, float]) -> dict[str, float]:
    """Drop negligible domains (keeping at least two) and renormalise, in the domains' order."""
    ranked = sorted(weights, key=weights.__getitem__, reverse=True)
    kept = {key for key in ranked if weights[key] >= MIN_DOMAIN_WEIGHT} | set(ranked[:2])
    total = sum(weights[key] for key in kept)
    return {key: weights[key] / total for key in weights if key in kept}


def _u_shaped(rng: random.Random) -> float:
    return round(rng.betavariate(0.6, 0.6), 4)


def draw_profile(partner_id: str, rng: random.Random, *, domains: tuple[str, ...] = tuple(DOMAINS)) -> PartnerProfile:
    """One lab's profile; the same rng state always gives the same profile."""
    domain_mix = _focus(_dirichlet(rng, domains, DOMAIN_CONCENTRATION))
    habits = Habits(cold=_u_shaped(rng), thorough=_u_shaped(rng), patient=_u_shaped(rng))
    style = Style(**{name: rng.choice(options) for name, options in STYLE_CHOICES.items()},  # type: ignore[arg-type]
                  speed_in_rpm=rng.random() < RPM_LABS)  # fmt: skip
    numbering = rng.choice(NUMBERING)
    formats = _dirichlet(rng, FORMATS, 1.0)
    efficiency = rng.uniform(*EFFICIENCY_SHARE)
    others = _dirichlet(rng, ("published", "internal", "full-ip"), 2.0)
    label_mix = {Sensitivity.EFFICIENCY: efficiency, **{Sensitivity(k): (1 - efficiency) * v for k, v in others.items()}}
    default_label = rng.choices(DEFAULT_LABELS, weights=DEFAULT_LABEL_WEIGHTS)[0]
    folders = {label: rng.choice(names) for label, names in LABEL_FOLDERS.items()}
    agreements = Agreements(dpa=True, irb=rng.random() < 0.5, federated_training=True)
    return PartnerProfile(partner_id, domain_mix, habits, style, numbering, formats, label_mix, default_label, folders,
                          agreements)  # fmt: skip


def mix_distance(a: dict[str, float], b: dict[str, float]) -> float:
    """Total variation distance between two domain mixes (0: the same, 1: no domain in common)."""
    return 0.5 * sum(abs(a.get(key, 0.0) - b.get(key, 0.0)) for key in set(a) | set(b))


def draw_profiles(partner_ids: list[str], seed: int) -> list[PartnerProfile]:
    """Profiles of several labs, each drawn from its own seeded stream and kept distinct from the ones before it."""
    profiles: list[PartnerProfile] = []
    for partner_id in partner_ids:
        rng = random.Random(f"{seed}/{partner_id}/profile")
        best, best_distance = None, -1.0
        for _ in range(PROFILE_TRIES):
            candidate = draw_profile(partner_id, rng)
            distance = min((mix_distance(candidate.domain_mix, p.domain_mix) for p in profiles), default=1.0)
            if distance > best_distance:
                best, best_distance = candidate, distance
            if distance >= DISTINCT_MIX:
                break
        assert best is not None
        profiles.append(best)
    return profiles


def partner_config_toml(profile: PartnerProfile) -> str:
    """The lab's `mshale.toml`: its default label, one glob rule per label folder, its agreements."""
    rules = ",\n".join(f'  {{glob = "{folder}/**", label = "{label.value}"}}' for label, folder in profile.folders.items())
    agreements = profile.agreements
    return (
        f"# Partner config of {profile.partner_id} (synthesized): labels by folder, default for the rest.\n"
        "[sensitivity]\n"
        f'default = "{profile.default_label.value}"\n'
        f"rules = [\n{rules},\n]\n\n"
        "[agreements]\n"
        f"dpa = {str(agreements.dpa).lower()}\n"
        f"irb = {str(agreements.irb).lower()}\n"
        f"federated_training = {str(agreements.federated_training).lower()}\n"
    )
