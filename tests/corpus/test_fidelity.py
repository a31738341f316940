"""(a) The extractor parses synthesized files into the specs their templates meant.

Protocols of every domain in every file format, written by labs of different habits and styles,
are written to disk and read back exactly as a partner's extractor reads them; the intended and
extracted specs are compared step by step.
"""

from __future__ import annotations

import random
from dataclasses import replace
from itertools import product
from pathlib import Path

import pytest

from mshale_fl.corpus import synthesize, write_partner_files, write_synth_corpus
from mshale_fl.corpus.domains import DOMAINS
from mshale_fl.corpus.fidelity import compare, extract_written, summarise
from mshale_fl.corpus.partners import FORMATS, draw_profile
from mshale_fl.corpus.synth import cached_ground_truth, synthesize_partner
from mshale_fl.schemas.vocabulary import Sensitivity

SEED = 30
PER_COMBINATION = 1


def test_synthesized_files_parse_into_the_intended_steps_temperatures_and_times(tmp_path: Path) -> None:
    truth = cached_ground_truth(SEED)
    sample = []
    for number, (domain, file_format) in enumerate(product(DOMAINS, FORMATS)):
        # a lab of its own (habits, style, labels) for every domain and format, so all of them are read
        lab = draw_profile(f"lab-{number:02d}", random.Random(f"fidelity {number}"))
        lab = replace(lab, domain_mix={domain: 1.0}, formats={file_format: 1.0})
        labels = random.Random(number).sample(list(Sensitivity), PER_COMBINATION)
        partner = synthesize_partner(lab, PER_COMBINATION, truth, SEED, labels=labels)
        write_partner_files(partner, tmp_path / lab.partner_id)
        sample.extend((tmp_path / lab.partner_id, protocol) for protocol in partner.protocols)

    results = [compare(protocol, extract_written(folder, protocol), truth) for folder, protocol in sample]
    report = summarise(results)
    failures = [r for r in results if not (r.operations and r.temperatures and r.durations and r.ground_truth_features)]
    assert report.protocols == len(DOMAINS) * len(FORMATS) * PER_COMBINATION
    assert report.steps >= 0.98, failures
    assert report.operations >= 0.95 and report.temperatures >= 0.95 and report.durations >= 0.95, failures
    assert report.domain >= 0.95 and report.organism >= 0.9, report
    assert report.ground_truth_features >= 0.95, failures


def test_a_misread_step_is_counted_as_one_step(tmp_path: Path) -> None:
    corpus = synthesize(1, 4, seed=3)
    write_synth_corpus(corpus, tmp_path)
    protocol = corpus.partners[0].protocols[0]
    spec = extract_written(tmp_path / "lab-01", protocol)
    assert spec is not None
    exact = compare(protocol, spec, corpus.ground_truth)
    assert exact.steps_recovered == exact.intended_steps and exact.operations
    dropped = spec.model_copy(update={"steps": spec.steps[1:]})
    result = compare(protocol, dropped, corpus.ground_truth)
    assert result.steps_recovered == exact.intended_steps - 1 and not result.operations
    assert compare(protocol, None, corpus.ground_truth).steps_recovered == 0


def test_summarise_needs_protocols() -> None:
    with pytest.raises(ValueError):
        summarise([])
