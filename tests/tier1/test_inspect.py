"""`inspect` and the transmission plan it shares with `submit`: what leaves, what is withheld and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mshale_fl.agents.partner.extract import extract_corpus
from mshale_fl.agents.partner.inspect import load_featurizer, operation_summary
from mshale_fl.agents.partner.transmission import SpecsFolderError, plan_transmission, submission_event_id
from mshale_fl.cli.inspect_cmd import NO_FEATURIZER, inspect
from mshale_fl.schemas.protocol_spec import ProtocolSpec, Step
from mshale_fl.schemas.vocabulary import Operation

from .support import SHARED_DIR, build_corpus


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("inspect")
    labels = build_corpus(root / "corpus", SHARED_DIR)
    extract_corpus(root / "corpus", root / "out")
    return root / "out", labels


def copy_of(folder: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(folder, tmp_path / "out")
    return tmp_path / "out"


def run(*args: str) -> typer.testing.Result:
    app = typer.Typer()
    app.command()(inspect)
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def test_the_table_shows_what_leaves_and_what_is_withheld_and_why(extracted: tuple[Path, dict[str, str]]) -> None:
    folder, labels = extracted
    result = run("--specs", str(folder))
    assert result.exit_code == 0, result.output
    published = [source for source, label in labels.items() if label == "published"]
    assert f"{len(published)} of {len(labels)} protocols would be sent" in result.output
    sent_part, withheld_part = result.output.split("Withheld (never sent)")
    for source in published:
        assert source in sent_part and source not in withheld_part
    reasons = {"full-ip": "full_ip_never_leaves", "internal": "internal_at_most_vectors", "efficiency": "efficiency_not_as_spec"}
    for source, label in labels.items():
        if label != "published":
            line = next(line for line in withheld_part.splitlines() if source in line)
            assert label in line and reasons[label] in line, line
    assert "front_matter" in withheld_part and "rule:internal/**" in withheld_part


def test_json_holds_the_exact_payloads_that_submit_would_publish(extracted: tuple[Path, dict[str, str]]) -> None:
    folder, labels = extracted
    result = run("--specs", str(folder), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    plan = plan_transmission(folder)
    by_source = {row["source"]: row for row in report["protocols"]}
    assert set(by_source) == set(labels)
    for item in plan.items:
        row = by_source[item.source]
        assert row["transmitted"] is item.transmittable is (labels[item.source] == "published")
        if item.transmittable:
            # The payload shown is the payload sent: the spec file, byte for byte in meaning.
            assert row["payload"] == item.event("lab-000000000001").payload.model_dump(mode="json")
            assert row["payload"]["spec"] == json.loads((folder / item.spec_file).read_text())
        else:
            assert "payload" not in row and "summary" not in row
            # Nothing of a withheld spec is shown: not even its content hash.
            assert item.content_hash not in result.output


def test_show_features_shows_tier_2_vectors_or_says_they_come_at_tier_2(extracted: tuple[Path, dict[str, str]]) -> None:
    folder, labels = extracted
    result = run("--specs", str(folder), "--show-features")
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    if load_featurizer() is None:
        assert " ".join(NO_FEATURIZER.split()) in flat
    else:
        assert "Tier 2 feature vectors" in result.output
        for source, label in labels.items():
            if label == "full-ip":
                assert f"{source}: no vector would leave" in result.output
    as_json = json.loads(run("--specs", str(folder), "--json", "--show-features").output)
    assert as_json["features"]["available"] is (load_featurizer() is not None)


def test_the_manifest_cannot_make_a_withheld_protocol_transmittable(
    extracted: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder = copy_of(extracted[0], tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    for record in manifest["protocols"]:
        record["decision"]["transmittable"] = record["sensitivity"] != "published"  # inverted by hand
        record["may_leave_as"] = ["spec", "vectors", "training"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    plan = plan_transmission(folder)
    # Policy re-check: full-ip / internal / efficiency stay withheld; the manifest's "no" still counts.
    assert plan.transmitted == []
    reasons = {item.sensitivity.value: item.decision.reason for item in plan.items}
    assert reasons == {"published": "manifest_withholds", "full-ip": "full_ip_never_leaves",
                       "internal": "internal_at_most_vectors", "efficiency": "efficiency_not_as_spec"}  # fmt: skip
    assert all(item.spec is None for item in plan.items)  # withheld specs are not even read


def test_an_unknown_label_counts_as_full_ip_and_local_mode_sends_nothing(
    extracted: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder = copy_of(extracted[0], tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["protocols"][0]["sensitivity"] = "public-ish"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert plan_transmission(folder).items[0].decision.reason == "full_ip_never_leaves"
    manifest["local_mode"] = True
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert plan_transmission(folder).transmitted == []


def test_a_spec_file_that_does_not_match_the_manifest_is_withheld(
    extracted: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder = copy_of(extracted[0], tmp_path)
    plan = plan_transmission(folder)
    changed, missing = plan.transmitted[:2]
    other = plan.transmitted[2]
    (folder / changed.spec_file).write_bytes((folder / other.spec_file).read_bytes())
    (folder / missing.spec_file).unlink()
    again = {item.source: item.decision.reason for item in plan_transmission(folder).items}
    assert again[changed.source] == "spec_hash_mismatch" and again[missing.source] == "spec_file_missing"
    assert again[other.source] == "allowed"


def test_missing_empty_or_foreign_folders_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hello")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "manifest.json").write_text(json.dumps({"manifest_version": 1, "protocols": []}))
    (tmp_path / "out" / "specs").mkdir(parents=True)
    (tmp_path / "out" / "manifest.json").write_text("{}")
    cases = {"missing": "does not exist", "empty": "is empty", "foreign": "not an extraction output folder",
             "nothing": "lists no protocols", "out/specs": f"pass --specs {tmp_path / 'out'}"}  # fmt: skip
    for name, message in cases.items():
        with pytest.raises(SpecsFolderError, match=message):
            plan_transmission(tmp_path / name)
        result = run("--specs", str(tmp_path / name))
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output


def test_event_ids_are_deterministic_per_partner_content_and_tier() -> None:
    assert submission_event_id("lab-a", "a" * 64, 1) == submission_event_id("lab-a", "a" * 64, 1)
    assert len({submission_event_id(p, h, t) for p in ("lab-a", "lab-b") for h in ("a" * 64, "b" * 64) for t in (1, 2)}) == 8


def test_operation_summary_collapses_runs_and_truncates() -> None:
    ops = [Operation.ADD, Operation.MIX, Operation.CENTRIFUGE, Operation.CENTRIFUGE, Operation.WASH]
    spec = ProtocolSpec(content_hash="c" * 64, steps=[Step(operation=op) for op in ops])
    assert operation_summary(spec) == "add, mix, centrifuge x2, wash"
    assert operation_summary(spec, limit=2) == "add, mix, ... (+2 more)"
