"""`extract --tier 2`, the Tier 2 transmission plan, batches and `inspect`: on files only (no broker)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import typer
from tier1.support import SHARED_DIR, unique_partner_id
from typer.testing import CliRunner

from mshale_fl.agents.partner.batches import batch_event_id, content_defined_batches
from mshale_fl.agents.partner.extract import extract_corpus, read_manifest, read_spec
from mshale_fl.agents.partner.extract.output import vector_bytes
from mshale_fl.agents.partner.featurize import feature_names, featurize
from mshale_fl.agents.partner.transmission import plan_transmission
from mshale_fl.cli.extract_cmd import extract
from mshale_fl.cli.inspect_cmd import inspect
from mshale_fl.cli.submit_cmd import submit
from mshale_fl.schemas.payloads import VectorsSubmitted
from mshale_fl.schemas.vocabulary import Sensitivity
from mshale_fl.testing.samples import sample_spec

from .submission_support import build_tier2_corpus

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/nowhere"


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("tier2")
    labels = build_tier2_corpus(root / "corpus", SHARED_DIR)
    extract_corpus(root / "corpus", root / "out", tier=2)
    return root / "out", labels


def copy_of(folder: Path, tmp_path: Path) -> Path:
    shutil.copytree(folder, tmp_path / "out")
    return tmp_path / "out"


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def invoke(command: object, *args: str, env: dict[str, str] | None = None) -> typer.testing.Result:
    app = typer.Typer()
    app.command()(command)
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250", **(env or {})})


def one_line_error(result: typer.testing.Result, *needles: str) -> str:
    assert result.exit_code == 2 and result.stdout == "", (result.stdout, result.stderr, result.exception)
    line = " ".join(result.stderr.split())
    assert line.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in line, line
    return line


# -- extract --tier 2 --------------------------------------------------------------------------------


def test_tier_2_writes_each_specs_vector_beside_it_the_same_bytes_every_time(tmp_path: Path) -> None:
    labels = build_tier2_corpus(tmp_path / "corpus", SHARED_DIR)
    first = extract_corpus(tmp_path / "corpus", tmp_path / "one", tier=2)
    extract_corpus(tmp_path / "corpus", tmp_path / "two", tier=2, jobs=2)  # same salt (same parent), other jobs
    one, two = tree(tmp_path / "one"), tree(tmp_path / "two")
    assert one == two  # deterministic: byte-identical vectors, specs and manifest
    assert not [name for name in one if name.endswith(".tmp") or "/." in f"/{name}"]  # atomic: no leftovers

    for record in first.protocols:
        assert record["vector"] == f"vectors/{record['source']}.vector.json"
        spec = read_spec(tmp_path / "one" / record["spec"])
        assert one[record["vector"]] == vector_bytes(featurize(spec))  # the featurizer's vector of that very spec
        decision = record["decision"]
        assert decision["form"] == "vectors"
        assert decision["transmittable"] is (labels[record["source"]] != "full-ip")  # vectors need the DPA: declared
    assert first.manifest["config"] == str((tmp_path / "corpus" / "mshale.toml").resolve())
    assert first.manifest["agreements"]["dpa"] is True

    # Back to Tier 1 in the same folder: no vector stays behind to be sent by mistake.
    again = extract_corpus(tmp_path / "corpus", tmp_path / "one", tier=1)
    assert not list((tmp_path / "one" / "vectors").rglob("*.vector.json"))
    assert not any("vector" in record for record in again.protocols)
    assert len([path for path in again.removed_stale if path.name.endswith(".vector.json")]) == len(labels)


def test_extract_tier_2_refuses_without_a_dpa_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    build_tier2_corpus(corpus, SHARED_DIR)
    config = corpus / "mshale.toml"
    config.write_text(config.read_text().replace("dpa = true", "dpa = false"))
    line = one_line_error(invoke(extract, "--corpus", str(corpus), "--output", str(tmp_path / "out"), "--tier", "2"),
                          "Tier 2", "Data Processing Agreement", "[agreements] dpa = true", str(config))  # fmt: skip
    assert "--tier 1" in line
    assert not (tmp_path / "out").exists()
    # No config at all: the same refusal, saying none was found.
    config.unlink()
    one_line_error(invoke(extract, "--corpus", str(corpus), "--output", str(tmp_path / "out"), "--tier", "2"),
                   "no partner config was found")  # fmt: skip
    assert not (tmp_path / "out").exists()
    # Tier 1 needs no agreement; local mode sends nothing, so it may compute vectors without one.
    assert invoke(extract, "--corpus", str(corpus), "--output", str(tmp_path / "t1")).exit_code == 0
    local = invoke(extract, "--corpus", str(corpus), "--output", str(tmp_path / "local"), "--tier", "2", "--local-mode")
    assert local.exit_code == 0, local.output
    assert not any(record["decision"]["transmittable"] for record in read_manifest(tmp_path / "local")["protocols"])


# -- the plan: only checked vectors, one per text ------------------------------------------------------------


def test_the_plan_sends_only_vectors_that_are_the_featurizers_vector_of_their_spec(
    extracted: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder = copy_of(extracted[0], tmp_path)
    plan = plan_transmission(folder)
    assert plan.tier == 2
    by_source = {item.source: item for item in plan.items}
    edited, regridded, missing = "published/wlp-b.txt", "internal/wlp-c.txt", "efficiency-wlp-d.md"
    vector = json.loads((folder / by_source[edited].vector_file).read_text())
    vector["values"][7] = 0.3  # off the grid: a smuggled number
    (folder / by_source[edited].vector_file).write_text(json.dumps(vector))
    vector = json.loads((folder / by_source[regridded].vector_file).read_text())
    vector["values"][7] = 1.0 - vector["values"][7]  # on the grid, but not this spec's vector
    (folder / by_source[regridded].vector_file).write_text(json.dumps(vector))
    (folder / by_source[missing].vector_file).unlink()

    again = {item.source: item for item in plan_transmission(folder).items}
    assert again[edited].decision.reason == again[regridded].decision.reason == "vector_stale"
    assert again[missing].decision.reason == "vector_file_missing"
    # The published copy of a full-ip text is withheld with it: one text, the most restrictive label.
    assert again["published/looks-public.md"].decision.reason == "same_text_as_full_ip"
    assert again["published/looks-public.md"].content_hash == again["secret/wlp-e.md"].content_hash
    for item in again.values():
        if item.transmittable:
            assert item.vector == featurize(read_spec(folder / item.spec_file))
        else:
            assert item.vector is None  # withheld vectors are not even loaded


def test_batches_hold_one_label_one_vector_per_text_and_keep_their_ids(extracted: tuple[Path, dict[str, str]]) -> None:
    folder, labels = extracted
    plan = plan_transmission(folder)
    partner = unique_partner_id()
    submissions = plan.submissions(partner, batch_size=2)
    assert [s.event_id for s in submissions] == [s.event_id for s in plan_transmission(folder).submissions(partner, batch_size=2)]
    assert len({s.event_id for s in submissions}) == len(submissions)
    sent_sources = {item.source for s in submissions for item in s.items}
    assert sent_sources == {item.source for item in plan.transmitted}
    assert "published/looks-public.md" not in sent_sources
    hashes = []
    for submission in submissions:
        payload = submission.event.payload
        assert submission.event.type == "vectors.submitted" and 1 <= submission.size <= 2
        assert {labels[item.source] for item in submission.items} == {payload.sensitivity.value}
        hashes += [vector.spec_hash for vector in payload.vectors]
        assert submission.event_id == batch_event_id(partner, payload)
    # wlp-a.txt and wlp-a-copy.txt are one text: one vector, carried for both protocols.
    assert len(hashes) == len(set(hashes)) == len(sent_sources) - 1
    assert {s.event_id for s in submissions}.isdisjoint({s.event_id for s in plan.submissions(unique_partner_id(), batch_size=2)})


def test_batches_are_cut_by_content_so_a_new_protocol_changes_few_of_them() -> None:
    hashes = [hashlib.sha256(str(index).encode()).hexdigest() for index in range(3000)]  # uniform, like HMACs
    before = content_defined_batches(hashes, str, 100)
    assert all(1 <= len(batch) <= 100 for batch in before) and sum(map(len, before)) == 3000
    assert [h for batch in before for h in batch] == sorted(hashes)

    def positional(items: list[str]) -> list[list[str]]:
        ordered = sorted(items)
        return [ordered[i : i + 100] for i in range(0, len(ordered), 100)]

    def changed(cut, new: str) -> int:  # type: ignore[no-untyped-def]
        return len({tuple(b) for b in cut([*hashes, new])} - {tuple(b) for b in cut(hashes)})

    added = [hashlib.sha256(f"new {index}".encode()).hexdigest() for index in range(40)]
    by_content = [changed(lambda items: content_defined_batches(items, str, 100), new) for new in added]
    by_position = [changed(positional, new) for new in added]
    assert max(by_content) <= 5 and sum(by_content) / len(added) < 2  # its own batch, now and then the next few
    assert sum(by_position) / len(added) > 5  # positional cuts change every batch after the new vector
    with pytest.raises(ValueError, match="1 to 1000"):
        content_defined_batches(hashes, str, 1001)


def test_a_batch_id_depends_on_its_content() -> None:
    vector = featurize(sample_spec(1))
    one = VectorsSubmitted(sensitivity=Sensitivity.INTERNAL, vectors=[vector])
    other_label = VectorsSubmitted(sensitivity=Sensitivity.PUBLISHED, vectors=[vector])
    other_vector = VectorsSubmitted(sensitivity=Sensitivity.INTERNAL, vectors=[featurize(sample_spec(2))])
    assert batch_event_id("lab-a", one) == batch_event_id("lab-a", VectorsSubmitted.model_validate(one.model_dump()))
    ids = {batch_event_id(p, b) for p, b in (("lab-a", one), ("lab-b", one), ("lab-a", other_label), ("lab-a", other_vector))}
    assert len(ids) == 4


# -- inspect and submit on a Tier 2 folder ---------------------------------------------------------------------


def test_inspect_shows_the_vectors_that_would_leave_and_names_every_feature(extracted: tuple[Path, dict[str, str]]) -> None:
    folder, labels = extracted
    plan = plan_transmission(folder)
    sent = {item.source: item for item in plan.transmitted}
    table = invoke(inspect, "--specs", str(folder))
    assert table.exit_code == 0, table.output
    assert f"{len(sent)} of {len(labels)} protocols would be sent as feature vectors" in table.output

    report = json.loads(invoke(inspect, "--specs", str(folder), "--json", "--show-features").output)
    rows = {row["source"]: row for row in report["protocols"]}
    for source, item in sent.items():
        assert rows[source]["event_type"] == "vectors.submitted"
        assert rows[source]["payload"]["vector"] == json.loads((folder / item.vector_file).read_text())  # the file sent
    for source in set(labels) - set(sent):
        assert "payload" not in rows[source]
    names = feature_names()
    shown = {row["source"]: row for row in report["features"]["vectors"]}
    assert set(shown) == set(sent)
    for source, row in shown.items():
        assert row["values_by_name"] == dict(zip(names, sent[source].vector.values, strict=True))
    assert {row["source"] for row in report["features"]["no_vector"]} == set(labels) - set(sent)

    text = invoke(inspect, "--specs", str(folder), "--show-features").output
    for source, item in sent.items():
        section = text.split(f"{source}: ", 1)[1].split(" values non-zero", 1)[1].split("non-zero", 1)[0]
        for name, value in zip(names, item.vector.values, strict=True):
            assert f"{name.split('.', 1)[1]}={value:g}" in section, (source, name)
    for source in set(labels) - set(sent):
        assert f"{source}: no vector would leave" in text


def test_submit_refuses_tier_2_when_the_partner_config_no_longer_declares_a_dpa(
    extracted: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder = extracted[0]
    key = f"mshale_{unique_partner_id()}_{'0' * 16}_{'A' * 43}"
    env = {"MSHALE_BROKER_URL": UNREACHABLE, "MSHALE_API_KEY": key}  # refused before any connection
    no_dpa = tmp_path / "mshale.toml"
    no_dpa.write_text('[sensitivity]\ndefault = "published"\n[agreements]\ndpa = false\n')
    line = one_line_error(invoke(submit, "--specs", str(folder), "--config", str(no_dpa), env=env),
                          "Tier 2", "[agreements] dpa = true", str(no_dpa))  # fmt: skip
    assert key not in line
    # The config extract used is where the agreements are read from; gone, it must be named again.
    moved = copy_of(folder, tmp_path / "moved")
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["config"] = str(tmp_path / "gone.toml")
    (moved / "manifest.json").write_text(json.dumps(manifest))
    one_line_error(invoke(submit, "--specs", str(moved), env=env), "no longer exists", "--config")
    for size in ("0", "1001"):
        assert invoke(submit, "--specs", str(folder), "--batch-size", size, env=env).exit_code == 2
