"""Small Tier 3 corpora for the demo and the federation tests, written by the corpus synthesizer.

`write_corpus(folder, protocols, seed=...)` writes one lab's training corpus into `folder`:
`protocols` efficiency protocols (Markdown, plain text and protocols.io JSON), each with its
outcome in a `<file>.outcome.json` sidecar, and a `mshale.toml` that labels them and declares the
DPA and the federated training agreement, so every protocol trains at Tier 3. The lab (its
domains, habits and style) depends on the seed; the outcome function does not: every corpus
written here shares the ground truth of `SHARED_GROUND_TRUTH_SEED`, so the partners of one
federation learn the same thing from different data (mshale_fl/corpus/README.md).

The outcomes stay on the partner's disk (they are read by local training only).
"""

from __future__ import annotations

from pathlib import Path

from mshale_fl.corpus.synth import cached_ground_truth, training_partner, write_partner_files

AGREEMENTS = "[agreements]\ndpa = true\nirb = false\nfederated_training = true\n"
"""The agreements a Tier 3 training corpus needs (kept for callers that write their own config)."""

SHARED_GROUND_TRUTH_SEED = 0


def write_corpus(folder: Path, protocols: int, *, seed: int) -> Path:
    """`protocols` efficiency protocols with outcomes in `folder`, different domains and wording per seed."""
    partner = training_partner(f"lab-{seed}", protocols, seed, cached_ground_truth(SHARED_GROUND_TRUTH_SEED))
    write_partner_files(partner, Path(folder))
    return Path(folder)
