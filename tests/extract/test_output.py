"""Output: deterministic (byte-identical, whatever --jobs), atomic (no partial file after a failure), salted hashes."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import typer
from mshale_fl.agents.partner.extract import pipeline
from mshale_fl.agents.partner.extract.output import (
    read_manifest,
    read_spec,
)
from mshale_fl.agents.partner.extract.salt import load_or_create_salt, salt_path
from typer.testing import CliRunner

from mshale_fl.cli.extract_cmd import extract
from mshale_fl.fileio import write_atomic

from .conftest import write


@pytest.fixture
def corpus(tmp_path: Path, wlp_dir: Path) -> Path:
    """A small mixed corpus: 24 WLP protocols in two folders plus Markdown and JSON protocols."""
    root = tmp_path / "corpus"
    for index, text in enumerate(sorted((wlp_dir / "dev").glob("*.txt"))[:24]):
        folder = root / ("a" if index % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(text, folder / text.name)
    write(root / "c" / "mini.md", "---\nsensitivity: published\n---\n# Miniprep\n1. Add 250 µl P1.\n2. Spin 1 min.\n")
    write(root / "d.json", json.dumps({"title": "Gel", "steps": ["Run a 1% agarose gel at 100 V for 30 min."]}))
    return root


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(*args: str) -> str:
    app = typer.Typer()
    app.command()(extract)
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_two_runs_and_any_number_of_jobs_give_byte_identical_output(corpus: Path, tmp_path: Path) -> None:
    _run("--corpus", str(corpus), "--output", str(tmp_path / "one"))
    _run("--corpus", str(corpus), "--output", str(tmp_path / "again"))
    _run("--corpus", str(corpus), "--output", str(tmp_path / "two"), "--jobs", "2")
    one = _tree(tmp_path / "one")
    assert len([name for name in one if name.endswith(".spec.json")]) == 26
    assert one == _tree(tmp_path / "again")
    assert one == _tree(tmp_path / "two")
    for content in one.values():
        assert content.endswith(b"\n")
        assert not re.search(rb"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", content)  # no timestamps
        assert json.loads(content) == json.loads(json.dumps(json.loads(content), sort_keys=True))


def test_spec_files_are_canonical_and_valid(corpus: Path, tmp_path: Path) -> None:
    _run("--corpus", str(corpus), "--output", str(tmp_path / "out"))
    manifest = read_manifest(tmp_path / "out")
    for record in manifest["protocols"]:
        path = tmp_path / "out" / record["spec"]
        spec = read_spec(path)
        assert path.read_bytes() == (json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":")) + "\n").encode()
        assert spec.content_hash == record["content_hash"]


def test_a_failing_writer_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "spec.json"

    def half_then_crash(handle) -> None:
        handle.write(b'{"content_hash":"')
        raise RuntimeError("serializer crashed")

    with pytest.raises(RuntimeError):
        write_atomic(target, half_then_crash)
    assert list(tmp_path.iterdir()) == []

    write_atomic(target, b"old\n")
    with pytest.raises(RuntimeError):
        write_atomic(target, half_then_crash)
    assert target.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]


def test_a_serializer_crash_mid_run_leaves_only_complete_files(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "out"
    pipeline.extract_corpus(corpus, output)
    before = _tree(output)
    calls = {"n": 0}
    real = pipeline.spec_bytes

    def crash_on_fifth(spec):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("serializer crashed")
        return real(spec)

    monkeypatch.setattr(pipeline, "spec_bytes", crash_on_fifth)
    for leftover in output.rglob("*.spec.json"):
        leftover.unlink()
    with pytest.raises(RuntimeError):
        pipeline.extract_corpus(corpus, output)
    after = _tree(output)
    assert not [name for name in after if name.endswith(".tmp") or "/." in f"/{name}"]
    assert after["manifest.json"] == before["manifest.json"]  # the manifest is written last
    written = [name for name in after if name.endswith(".spec.json")]
    assert len(written) == 4
    for name in written:
        assert after[name] == before[name]  # complete, never partial


def test_content_hash_is_salted_and_the_salt_stays_outside_the_output(corpus: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = pipeline.extract_corpus(corpus, output)
    salt = load_or_create_salt(output)
    assert salt_path(output) == (tmp_path / ".mshale" / "salt").resolve()
    assert salt_path(output).stat().st_mode & 0o077 == 0
    assert load_or_create_salt(tmp_path / "elsewhere") == salt  # same parent, same salt: stable hashes
    assert salt.hex() not in "".join(p.read_text() for p in output.rglob("*") if p.is_file())
    record = next(r for r in result.protocols if r["source"] == "d.json")
    text = "Gel\nRun a 1% agarose gel at 100 V for 30 min."
    assert record["content_hash"] == pipeline.content_hash(text, salt)
    assert record["content_hash"] != hashlib.sha256(text.encode()).hexdigest()
    other = pipeline.extract_corpus(corpus, tmp_path / "other-partner" / "out")
    assert next(r for r in other.protocols if r["source"] == "d.json")["content_hash"] != record["content_hash"]


def test_stale_specs_of_deleted_protocols_are_removed(corpus: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    pipeline.extract_corpus(corpus, output)
    (corpus / "d.json").unlink()
    result = pipeline.extract_corpus(corpus, output)
    assert not (output / "specs" / "d.json.spec.json").exists()
    assert [p.name for p in result.removed_stale] == ["d.json.spec.json"]
