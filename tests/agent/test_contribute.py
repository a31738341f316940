"""One step's preparation without a broker: what is extracted again, what is withheld across the corpus."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from tier1.support import FULL_IP, OWN_PUBLISHED

from mshale_fl.agents.partner.agent_state import FileRecord
from mshale_fl.agents.partner.contribute import Change, outcomes, prepare
from mshale_fl.agents.partner.extract.sensitivity import PartnerConfig, SensitivitySection
from mshale_fl.agents.partner.watch import FileSignature
from mshale_fl.schemas.vocabulary import Sensitivity

PUBLISHED = PartnerConfig(sensitivity=SensitivitySection(default=Sensitivity.PUBLISHED))


def change(corpus: Path, name: str) -> Change:
    path = corpus / name
    return Change(name, path, FileSignature.of(path.stat()))


def test_a_touched_file_is_not_extracted_again_and_a_vanished_one_waits(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text(OWN_PUBLISHED, encoding="utf-8")
    (corpus / "gone.md").write_text(OWN_PUBLISHED, encoding="utf-8")
    digest = hashlib.sha256(OWN_PUBLISHED.encode()).hexdigest()
    recorded = FileRecord(sha256=digest, size=1, mtime_ns=1, inode=1, status="accepted", fingerprint="f",
                          content_hash="c", tier=1, submission_id="s")  # fmt: skip
    changes = [change(corpus, "a.md"), change(corpus, "gone.md")]
    (corpus / "gone.md").unlink()
    prepared = prepare(changes, state_dir=tmp_path / "state", partner_config=PUBLISHED, submit_tier=1, fingerprint="f",
                       known={"a.md": recorded}, full_ip_hashes=set(), contributed={})  # fmt: skip
    assert prepared.plan is None and prepared.deferred == ["gone.md"]
    assert prepared.unchanged["a.md"].signature == changes[0].signature  # only the new signature is recorded
    assert dataclasses.replace(prepared.unchanged["a.md"], size=1, mtime_ns=1, inode=1) == recorded
    # Under another config fingerprint the same bytes are decided again.
    again = prepare(changes[:1], state_dir=tmp_path / "state", partner_config=PUBLISHED, submit_tier=1,
                    fingerprint="g", known={"a.md": recorded}, full_ip_hashes=set(), contributed={})  # fmt: skip
    assert again.plan is not None and [item.source for item in again.plan.transmitted] == ["a.md"]


def test_a_text_labelled_full_ip_elsewhere_in_the_corpus_is_withheld(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "secret.md").write_text(FULL_IP, encoding="utf-8")
    first = prepare([change(corpus, "secret.md")], state_dir=tmp_path / "state", partner_config=PUBLISHED,
                    submit_tier=1, fingerprint="f", known={}, full_ip_hashes=set(), contributed={})  # fmt: skip
    (record,) = outcomes(first, None, fingerprint="f", submit_tier=1).values()
    assert record.status == "withheld" and record.sensitivity == "full-ip"
    # A later step sees only the copy, without the front matter that labels it: the state remembers.
    (corpus / "copy.md").write_text(FULL_IP.split("---\n")[-1], encoding="utf-8")
    later = prepare([change(corpus, "copy.md")], state_dir=tmp_path / "state", partner_config=PUBLISHED,
                    submit_tier=1, fingerprint="f", known={}, full_ip_hashes={str(record.content_hash)}, contributed={})  # fmt: skip
    assert later.plan is not None and not later.plan.transmitted
    (copy,) = later.plan.items
    assert copy.sensitivity is Sensitivity.PUBLISHED and copy.decision.reason == "same_text_as_full_ip" and copy.spec is None
    # Without that memory the copy would have been sent: the rule is what stops it.
    unaware = prepare([change(corpus, "copy.md")], state_dir=tmp_path / "state", partner_config=PUBLISHED,
                      submit_tier=1, fingerprint="f", known={}, full_ip_hashes=set(), contributed={})  # fmt: skip
    assert unaware.plan is not None and len(unaware.plan.transmitted) == 1
