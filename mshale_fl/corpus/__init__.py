"""Synthetic partner corpora: realistic protocols in several domains with outcomes from a hidden function.

`mshale-fl corpus synth` (mshale_fl/cli/corpus_cmd.py) is the command; README.md beside this file
records the decisions. Modules, one idea each:

- `phrases.py`: a quantity as a lab writes it, and the normalised quantity it means
- `protocol.py`: a protocol before it is a file (lines and their intended steps) and the `Writer`
- `domains.py`: the domain templates (PCR, cloning, cell culture, ...) and their knobs
- `partners.py`: partner labs (domain mix, habits, style, formats, labels, agreements)
- `labels.py`: each protocol's sensitivity label and how its lab marks it
- `render.py`: Markdown, plain text and protocols.io JSON files
- `ground_truth.py`: the hidden outcome function of the 223 features
- `synth.py`: synthesis and writing (atomic), the manifest
- `fidelity.py`: how well the extractor recovers what the synthesizer meant
"""

from mshale_fl.corpus.ground_truth import GroundTruth, draw_ground_truth
from mshale_fl.corpus.synth import (
    GROUND_TRUTH_NAME,
    MANIFEST_NAME,
    CorpusError,
    PartnerCorpus,
    SynthCorpus,
    SynthesizedProtocol,
    synthesize,
    training_partner,
    write_partner_files,
    write_synth_corpus,
)

__all__ = [
    "GROUND_TRUTH_NAME",
    "MANIFEST_NAME",
    "CorpusError",
    "GroundTruth",
    "PartnerCorpus",
    "SynthCorpus",
    "SynthesizedProtocol",
    "draw_ground_truth",
    "synthesize",
    "training_partner",
    "write_partner_files",
    "write_synth_corpus",
]
