"""Which sensitivity label each synthesized protocol gets, and how its lab marks it.

Every partner holds protocols of every label (`published`, `internal`, `efficiency`, `full-ip`:
`schemas.vocabulary.Sensitivity`) once it has at least four, and marks them the three ways the
extractor reads (agents/partner/extract/sensitivity.py), in its order of precedence:

- `front_matter`: the file names its label (`sensitivity:` in Markdown front matter, a top-level
  `"sensitivity"` in a JSON export); plain-text files never do (labs do not write YAML there);
- `rule`: the file sits in the lab's folder for that label (`proprietary/`, `internal/`, ...),
  which a glob rule in `mshale.toml` labels;
- `default`: the file is unlabelled and outside every rule folder, so it takes the lab's default.

Files labelled by front matter or by default live at the corpus root or in a year folder, never in
a rule folder, so no protocol depends on precedence to mean what the synthesizer intended.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mshale_fl.corpus.partners import PartnerProfile
from mshale_fl.schemas.vocabulary import Sensitivity

LABELS = tuple(Sensitivity)
NEUTRAL_FOLDERS = ("", "", "2023", "2024")  # "" is the corpus root; years are how labs file runs
SOURCES = ("front_matter", "rule", "default")


@dataclass(frozen=True)
class Placement:
    label: Sensitivity
    source: str  # one of SOURCES
    folder: str  # relative folder ("" for the corpus root)
    marked: bool  # whether the file itself names its label (front matter or JSON field)


def label_quota(count: int, label_mix: dict[Sensitivity, float], rng: random.Random) -> list[Sensitivity]:
    """`count` labels in random order: each label once (when count allows), the rest by the mix (largest remainders)."""
    guaranteed = list(LABELS) if count >= len(LABELS) else []
    remaining = count - len(guaranteed)
    shares = {label: label_mix.get(label, 0.0) * remaining for label in LABELS}
    counts = {label: int(share) for label, share in shares.items()}
    by_remainder = sorted(LABELS, key=lambda label: (shares[label] - counts[label], label_mix.get(label, 0.0)), reverse=True)
    for label in by_remainder[: remaining - sum(counts.values())]:
        counts[label] += 1
    labels = guaranteed + [label for label in LABELS for _ in range(counts[label])]
    rng.shuffle(labels)
    return labels


def place(label: Sensitivity, file_format: str, profile: PartnerProfile, rng: random.Random) -> Placement:
    """Where a protocol with this label goes and whether it names its label, chosen among the ways its lab could."""
    ways = ["rule"]
    if file_format != "text":
        ways.append("front_matter")
    if label is profile.default_label:
        ways.append("default")
    way = rng.choice(ways)
    if way == "rule":
        return Placement(label, way, profile.folders[label], marked=False)
    return Placement(label, way, rng.choice(NEUTRAL_FOLDERS), marked=way == "front_matter")
