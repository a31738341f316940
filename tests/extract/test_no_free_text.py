"""No free text by construction: no word of a protocol can reach its spec unless the closed vocabularies hold it."""

from __future__ import annotations

import json
import os
import re
from enum import Enum
from pathlib import Path

import pytest
from mshale_fl.agents.partner.extract.output import read_manifest
from mshale_fl.agents.partner.extract.pipeline import extract_corpus
from mshale_fl.schemas import vocabulary
from mshale_fl.schemas.protocol_spec import ProtocolSpec, Quantity, Step
from pydantic import BaseModel

WORD = re.compile(r"[^\W\d_]{4,}")
HASH = re.compile(r"^[0-9a-f]{64}$")


def _closed_vocabulary_words() -> set[str]:
    """Enum values and field names of the spec contract, split into words, plus JSON's own literals."""
    names: set[str] = {"true", "false", "null"}
    for member in vars(vocabulary).values():
        if isinstance(member, type) and issubclass(member, Enum):
            names.update(str(item.value) for item in member)
    for model in (ProtocolSpec, Step, Quantity):
        assert issubclass(model, BaseModel)
        names.update(model.model_fields)
    return {word.lower() for name in names for word in WORD.findall(name)}


ALLOWED = _closed_vocabulary_words()


def _strings(node: object, key: str = "") -> list[tuple[str, str]]:
    """(field, string) for every key and string value of a parsed JSON document."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for name, value in node.items():
            found.append(("<key>", name))
            found += _strings(value, name)
    elif isinstance(node, list):
        for value in node:
            found += _strings(value, key)
    elif isinstance(node, str):
        found.append((key, node))
    return found


@pytest.mark.parametrize("split", ["train", "dev"])
def test_no_word_of_a_wlp_protocol_reaches_its_spec(split: str, wlp_dir: Path, tmp_path: Path) -> None:
    corpus = wlp_dir / split
    output = tmp_path / "out"
    extract_corpus(corpus, output, jobs=min(8, os.cpu_count() or 1))
    manifest = read_manifest(output)
    sources = sorted(p.name for p in corpus.glob("*.txt"))
    assert [r["source"] for r in manifest["protocols"]] == sources, manifest["unreadable"]
    leaks: list[tuple[str, str]] = []
    for record in manifest["protocols"]:
        raw = (output / record["spec"]).read_text(encoding="utf-8")
        spec = json.loads(raw)
        for field, value in _strings(spec):
            if field == "content_hash":
                assert HASH.match(value)  # a salted digest: hex by construction
                raw = raw.replace(value, "")
            else:
                assert value.lower() in ALLOWED or all(w.lower() in ALLOWED for w in WORD.findall(value)), value
        spec_words = {w.lower() for w in WORD.findall(raw)}
        text = (corpus / record["source"]).read_text(encoding="utf-8")
        for word in {w.lower() for w in WORD.findall(text)}:
            if word in spec_words and word not in ALLOWED:
                leaks.append((record["source"], word))
    assert leaks == []


def test_the_check_catches_a_leak() -> None:
    """The test above would notice a word that is not in the vocabularies."""
    assert "chloroform" not in ALLOWED and "miniprep" not in ALLOWED
    assert {"centrifuge", "operation", "quantities", "temperature", "buffer"} <= ALLOWED
