"""Sensitivity labels (front matter, glob rules, defaults) and the policy of what may leave."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from mshale_fl.agents.partner.extract.pipeline import extract_corpus
from mshale_fl.agents.partner.extract.sensitivity import (
    ConfigError,
    glob_to_regex,
    label_of,
    load_config,
)
from mshale_fl.agents.partner.policy import (
    TIERS,
    Agreements,
    Form,
    allowed_forms,
    decide,
    decide_form,
)
from mshale_fl.schemas.vocabulary import Sensitivity as S

from .conftest import write

CONFIG = """
[partner]
id = "lab-a"            # other sections belong to other components

[sensitivity]
default = "published"
rules = [
  {glob = "internal/**", label = "internal"},
  {glob = "**/*-eff.md", label = "efficiency"},
  {glob = "secret/*", label = "full-ip"},
]

[agreements]
dpa = true
"""

STEP = "Title\nAdd 5 ml water and incubate at 37 °C for 1 h.\n"
EVERY_AGREEMENT = [Agreements(*flags) for flags in itertools.product([False, True], repeat=3)]


def _corpus(root: Path) -> Path:
    write(root / "mshale.toml", CONFIG)
    write(root / "open.txt", STEP)
    write(root / "internal" / "a.txt", STEP)
    write(root / "internal" / "deep" / "b.md", STEP)
    write(root / "internal" / "labelled.md", "---\nsensitivity: published\n---\n" + STEP)
    write(root / "runs" / "x-eff.md", STEP)
    write(root / "secret" / "c.txt", STEP)
    write(root / "odd.md", "---\nsensitivity: top-secret\n---\n" + STEP)
    return root


@pytest.mark.parametrize(("glob", "path", "matches"), [
    ("internal/**", "internal/a.txt", True), ("internal/**", "internal/x/y.md", True),
    ("internal/**", "internalx/a.txt", False), ("*.md", "a.md", True), ("*.md", "x/a.md", False),
    ("**/*.md", "a.md", True), ("**/*.md", "x/y/a.md", True), ("lab?/*.txt", "lab1/a.txt", True),
])  # fmt: skip
def test_globs_match_relative_paths(glob: str, path: str, matches: bool) -> None:
    assert bool(glob_to_regex(glob).match(path)) is matches


def test_labels_follow_front_matter_then_first_rule_then_default(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    result = extract_corpus(corpus, tmp_path / "out", tier=1)
    labels = {r["source"]: (r["sensitivity"], r["label_source"]) for r in result.protocols}
    assert labels == {
        "internal/a.txt": ("internal", "rule:internal/**"),
        "internal/deep/b.md": ("internal", "rule:internal/**"),
        "internal/labelled.md": ("published", "front_matter"),  # front matter beats the glob
        "odd.md": ("full-ip", "front_matter_invalid"),  # an unknown label is the most restrictive
        "open.txt": ("published", "default"),
        "runs/x-eff.md": ("efficiency", "rule:**/*-eff.md"),
        "secret/c.txt": ("full-ip", "rule:secret/*"),
    }
    transmittable = {r["source"] for r in result.protocols if r["decision"]["transmittable"]}
    assert transmittable == {"internal/labelled.md", "open.txt"}


def test_tier_two_and_local_mode_in_the_manifest(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    tier2 = extract_corpus(corpus, tmp_path / "t2", tier=2)
    assert {r["source"] for r in tier2.protocols if r["decision"]["transmittable"]} == {
        "internal/a.txt", "internal/deep/b.md", "internal/labelled.md", "open.txt", "runs/x-eff.md"}  # fmt: skip
    local = extract_corpus(corpus, tmp_path / "local", tier=1, local_mode=True)
    assert len(local.protocols) == 7
    assert not any(r["decision"]["transmittable"] or r["may_leave_as"] for r in local.protocols)
    assert {r["decision"]["reason"] for r in local.protocols} == {"local_mode", "full_ip_never_leaves"}
    assert local.manifest["summary"]["transmittable"] == 0


def test_without_a_config_everything_is_full_ip(tmp_path: Path) -> None:
    write(tmp_path / "corpus" / "p.txt", STEP)
    (record,) = extract_corpus(tmp_path / "corpus", tmp_path / "out").protocols
    assert (record["sensitivity"], record["label_source"]) == ("full-ip", "built_in_default")
    assert record["decision"]["transmittable"] is False


def test_an_explicit_config_replaces_the_corpus_one(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    other = write(tmp_path / "other.toml", '[sensitivity]\ndefault = "internal"\n')
    config = load_config(other, corpus)
    assert config.sensitivity.default is S.INTERNAL and config.sensitivity.rules == []
    assert label_of("open.txt", None, config).sensitivity is S.INTERNAL


@pytest.mark.parametrize(("content", "message"), [
    ('[sensitivity]\ndefault = "secret"\n', "sensitivity.default"),
    ('[sensitivity]\nrules = [{glob = "a/**", lable = "internal"}]\n', "lable"),
    ("[sensitivity\n", "not valid TOML"),
    ('[agreements]\ndpa = "yes please"\n', "agreements.dpa"),
])  # fmt: skip
def test_config_mistakes_are_reported_precisely(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path / "mshale.toml", content))


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("agreements", EVERY_AGREEMENT)
@pytest.mark.parametrize("local_mode", [False, True])
def test_full_ip_never_leaves_in_any_form(tier: int, agreements: Agreements, local_mode: bool) -> None:
    decision = decide(S.FULL_IP, tier, agreements, local_mode=local_mode)
    assert decision.transmittable is False and decision.reason == "full_ip_never_leaves"
    assert allowed_forms(S.FULL_IP, agreements, local_mode=local_mode) == ()


@pytest.mark.parametrize("label", list(S))
@pytest.mark.parametrize("form", list(Form))
@pytest.mark.parametrize("agreements", EVERY_AGREEMENT)
def test_local_mode_marks_nothing_transmittable(label: S, form: Form, agreements: Agreements) -> None:
    assert decide_form(label, form, agreements, local_mode=True).transmittable is False


ALL = Agreements(dpa=True, irb=True, federated_training=True)


@pytest.mark.parametrize(("label", "agreements", "forms"), [
    (S.PUBLISHED, Agreements(), (Form.SPEC,)),
    (S.PUBLISHED, Agreements(dpa=True), (Form.SPEC, Form.VECTORS)),
    (S.PUBLISHED, ALL, (Form.SPEC, Form.VECTORS, Form.TRAINING)),
    (S.INTERNAL, Agreements(), ()),
    (S.INTERNAL, ALL, (Form.VECTORS,)),  # at most feature vectors
    (S.EFFICIENCY, Agreements(federated_training=True), ()),  # needs a DPA or an IRB
    (S.EFFICIENCY, Agreements(irb=True, federated_training=True), (Form.TRAINING,)),  # vectors need the tier 2 DPA
    (S.EFFICIENCY, ALL, (Form.VECTORS, Form.TRAINING)),  # never as a spec
])  # fmt: skip
def test_what_may_leave_per_label(label: S, agreements: Agreements, forms: tuple[Form, ...]) -> None:
    assert allowed_forms(label, agreements) == forms


def test_decisions_explain_themselves() -> None:
    decision = decide(S.INTERNAL, 1, ALL)
    assert (decision.form, decision.transmittable, decision.reason) == (Form.SPEC, False, "internal_at_most_vectors")
    assert decide(S.PUBLISHED, 2, Agreements()).reason == "tier2_needs_dpa"
    with pytest.raises(ValueError, match="tier"):
        decide(S.PUBLISHED, 4, ALL)
