"""Small Tier 3 corpora: efficiency protocols with outcomes in front matter, different per seed.

Used by the demo and the federation tests; the outcomes stay on the partner's disk (they are
read by local training only).
"""

from __future__ import annotations

import random
from pathlib import Path

AGREEMENTS = "[agreements]\ndpa = true\nirb = false\nfederated_training = true\n"

_STEPS = (
    "Add {v} ml of trypsin and incubate at 37 °C for {t} min.",
    "Centrifuge at {g} x g for {t} min.",
    "Wash the pellet with {v} ml of PBS.",
    "Incubate at room temperature for {t} min.",
    "Resuspend the cells in {v} ml of medium.",
    "Heat at 95 °C for {t} min.",
    "Add {u} µl of lysis buffer and mix by inverting.",
    "Store at -20 °C.",
    "Transfer the supernatant to a new tube.",
    "Centrifuge at 14000 rpm for {t} min.",
)


def write_corpus(folder: Path, protocols: int, *, seed: int) -> Path:
    """`protocols` efficiency protocols (front matter `outcome`), different steps and quantities per seed."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mshale.toml").write_text(AGREEMENTS, encoding="utf-8")
    for index in range(protocols):
        steps = rng.sample(_STEPS, rng.randint(2, 6))
        lines = [
            f"{n}. " + step.format(v=rng.randint(1, 20), t=rng.randint(1, 30), g=rng.choice((300, 1000, 5000)),
                                   u=rng.choice((50, 100, 250)))
            for n, step in enumerate(steps, start=1)
        ]  # fmt: skip
        outcome = round(rng.uniform(0.05, 0.95), 3)
        text = f"---\nsensitivity: efficiency\noutcome: {outcome}\n---\n# Protocol {index}\n" + "\n".join(lines) + "\n"
        (folder / f"protocol-{index:02d}.md").write_text(text, encoding="utf-8")
    return folder
