"""Protocol extraction: a partner's corpus -> ProtocolSpecs (closed vocabularies only) and a manifest.

Public API (what `inspect`, `submit` and `featurize` use):

- `extract_corpus(corpus, output, tier=, local_mode=, config=, jobs=)` -> `ExtractionResult`
- `extract_spec(protocol, salt)` -> `ExtractedSpec` (one protocol, in memory)
- `read_manifest(output)`, `read_spec(path)`, `spec_path(output, source)` — the output folder
- `load_config(path, corpus)`, `label_of(source, front_matter_value, config)` — labels and agreements
- `annotate(text)` -> spans (kept local; used for evaluation), `evaluate_wlp(folder)`
- the policy itself lives in `mshale_fl.agents.partner.policy` (`decide`, `allowed_forms`)

See README.md beside this file for formats, the salt, label precedence and what leaves.
"""

from mshale_fl.agents.partner.extract.evaluation import Report, evaluate_wlp
from mshale_fl.agents.partner.extract.output import (
    read_manifest,
    read_spec,
    spec_path,
)
from mshale_fl.agents.partner.extract.pipeline import (
    ExtractedSpec,
    ExtractionResult,
    content_hash,
    extract_corpus,
    extract_spec,
)
from mshale_fl.agents.partner.extract.reader import (
    Protocol,
    ReadFailure,
    read_corpus,
    read_one,
)
from mshale_fl.agents.partner.extract.salt import load_or_create_salt, salt_path
from mshale_fl.agents.partner.extract.sensitivity import (
    ConfigError,
    PartnerConfig,
    label_of,
    load_config,
)
from mshale_fl.agents.partner.extract.spans import Span, annotate

from mshale_fl.fileio import write_atomic

__all__ = [
    "ConfigError",
    "ExtractedSpec",
    "ExtractionResult",
    "PartnerConfig",
    "Protocol",
    "ReadFailure",
    "Report",
    "Span",
    "annotate",
    "content_hash",
    "evaluate_wlp",
    "extract_corpus",
    "extract_spec",
    "label_of",
    "load_config",
    "load_or_create_salt",
    "read_corpus",
    "read_manifest",
    "read_one",
    "read_spec",
    "salt_path",
    "spec_path",
    "write_atomic",
]
