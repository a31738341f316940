"""`mshale_fl.corpus.synth`: deterministic corpora, every sensitivity label, outcomes, hidden ground truth, safe writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mshale_fl.agents.partner.extract.reader import OUTCOME_SIDECAR_SUFFIX, corpus_files, read_one
from mshale_fl.agents.partner.extract.sensitivity import label_of, load_config
from mshale_fl.corpus import GROUND_TRUTH_NAME, MANIFEST_NAME, CorpusError, SynthCorpus, synthesize, write_synth_corpus
from mshale_fl.corpus import synth as synth_module
from mshale_fl.corpus.domains import DOMAINS
from mshale_fl.corpus.labels import SOURCES
from mshale_fl.corpus.partners import FORMATS
from mshale_fl.schemas.vocabulary import Sensitivity

from .conftest import snapshot


def test_the_same_seed_writes_the_same_bytes_and_another_seed_does_not(small_corpus: SynthCorpus, written_small: Path,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    again = tmp_path / "again"
    write_synth_corpus(synthesize(3, 12, seed=4), again, reveal_ground_truth=True)
    assert snapshot(again) == snapshot(written_small)
    other = synthesize(3, 12, seed=5)
    assert [p.content for p in other.partners[0].protocols] != [p.content for p in small_corpus.partners[0].protocols]


def test_more_protocols_per_partner_only_add_protocols(small_corpus: SynthCorpus) -> None:
    bigger = synthesize(3, 14, seed=4)
    for small, big in zip(small_corpus.partners, bigger.partners, strict=True):
        assert small.profile == big.profile
        # the label quota is redrawn for the new count, so compare what does not depend on it
        assert [p.draft for p in small.protocols] == [p.draft for p in big.protocols[:12]]


def test_every_label_occurs_in_every_partner_and_the_extractor_reads_the_intended_one(
    small_corpus: SynthCorpus, written_small: Path
) -> None:
    sources = set()
    for partner in small_corpus.partners:
        folder = written_small / partner.partner_id
        config = load_config(None, folder)
        assert {p.label for p in partner.protocols} == set(Sensitivity)
        by_path = {p.path: p for p in partner.protocols}
        files = [p.relative_to(folder).as_posix() for p in corpus_files(folder)]
        assert sorted(files) == sorted(by_path)  # sidecars and mshale.toml are not protocols
        for relative in files:
            read = read_one(folder / relative, folder)
            label = label_of(read.source, read.front_matter.get("sensitivity"), config)
            assert label.sensitivity is by_path[relative].label, relative
            kind = label.source.split(":")[0]
            sources.add({"rule": "rule", "front_matter": "front_matter", "default": "default"}[kind])
            assert kind == by_path[relative].placement.source
    assert sources == set(SOURCES)


def test_outcome_sidecars_sit_beside_efficiency_protocols_only(small_corpus: SynthCorpus, written_small: Path) -> None:
    for partner in small_corpus.partners:
        folder = written_small / partner.partner_id
        sidecars = {p.relative_to(folder).as_posix() for p in folder.rglob(f"*{OUTCOME_SIDECAR_SUFFIX}")}
        efficiency = {p.path for p in partner.protocols if p.label is Sensitivity.EFFICIENCY}
        assert sidecars == {path + OUTCOME_SIDECAR_SUFFIX for path in efficiency}
        for protocol in partner.protocols:
            if protocol.label is Sensitivity.EFFICIENCY:
                outcome = json.loads((folder / (protocol.path + OUTCOME_SIDECAR_SUFFIX)).read_text())["outcome"]
                assert outcome == protocol.outcome and 0.0 <= outcome <= 1.0
            else:
                assert protocol.outcome is None


def test_the_manifest_describes_partners_and_the_ground_truth_stays_out_of_partner_folders(
    small_corpus: SynthCorpus, written_small: Path, tmp_path: Path
) -> None:
    manifest = json.loads((written_small / MANIFEST_NAME).read_text())
    assert manifest["seed"] == 4 and manifest["protocols_per_partner"] == 12
    assert manifest["ground_truth"] == GROUND_TRUTH_NAME
    assert set(manifest["domains"]) == set(DOMAINS)
    for entry, partner in zip(manifest["partners"], small_corpus.partners, strict=True):
        assert entry["partner_id"] == partner.partner_id == entry["folder"]
        assert sum(entry["domains"].values()) == sum(entry["labels"].values()) == entry["protocols"] == 12
        assert entry["outcomes"] == entry["labels"]["efficiency"]
        assert set(entry["profile"]["domain_mix"]) >= set(entry["domains"])
        assert set(entry["formats"]) <= set(FORMATS)
        assert [f["path"] for f in entry["files"]] == [p.path for p in partner.protocols]
    mixes = [tuple(sorted(p["profile"]["domain_mix"].items())) for p in manifest["partners"]]
    assert len(set(mixes)) == len(mixes)  # heterogeneous labs

    revealed = json.loads((written_small / GROUND_TRUTH_NAME).read_text())
    assert revealed == json.loads(json.dumps(small_corpus.ground_truth.as_dict()))
    secrets = [f"{term['weight']}" for term in revealed["terms"]] + [f"{revealed['bias']}", "formula", "why"]
    for partner in small_corpus.partners:
        for path, content in snapshot(written_small / partner.partner_id).items():
            text = content.decode("utf-8")
            assert not any(secret in text for secret in secrets), path
    assert "weight" not in (written_small / MANIFEST_NAME).read_text()

    hidden = tmp_path / "hidden"
    write_synth_corpus(small_corpus, hidden)
    assert not (hidden / GROUND_TRUTH_NAME).exists()
    assert json.loads((hidden / MANIFEST_NAME).read_text())["ground_truth"] == "hidden"


def test_a_folder_that_is_not_empty_needs_force_which_replaces_only_the_previous_corpus(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_synth_corpus(synthesize(3, 4, seed=1), out, reveal_ground_truth=True)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not empty.*--force"):
        write_synth_corpus(synthesize(2, 4, seed=2), out)
    write_synth_corpus(synthesize(2, 4, seed=2), out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["lab-01", "lab-02", MANIFEST_NAME, "notes.txt"]  # lab-03 and the stale ground truth are gone
    assert json.loads((out / MANIFEST_NAME).read_text())["seed"] == 2
    (tmp_path / "file").write_text("x")
    with pytest.raises(CorpusError, match="not a folder"):
        write_synth_corpus(synthesize(1, 4, seed=2), tmp_path / "file")


def test_an_interrupted_write_leaves_the_folder_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    write_synth_corpus(synthesize(2, 4, seed=1), out)
    before = snapshot(out)
    written = []
    real_write = synth_module.write_atomic

    def failing_write(path: Path, content: bytes) -> None:
        if len(written) == 20:
            raise OSError(28, "No space left on device")
        written.append(path)
        real_write(path, content)

    monkeypatch.setattr(synth_module, "write_atomic", failing_write)
    with pytest.raises(CorpusError, match="No space left on device"):
        write_synth_corpus(synthesize(2, 12, seed=9), out, force=True)
    assert snapshot(out) == before
    assert not list(out.glob(".synth-staging-*"))
    written.clear()
    with pytest.raises(CorpusError):
        write_synth_corpus(synthesize(2, 12, seed=9), tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_sizes_out_of_range_are_refused_with_the_limits() -> None:
    with pytest.raises(CorpusError, match="--partners must be between 1"):
        synthesize(0, 10, seed=0)
    with pytest.raises(CorpusError, match="--protocols-per-partner must be between 4"):
        synthesize(2, 3, seed=0)
