"""Reading corpus folders: text, Markdown with front matter, protocols.io JSON with HTML, simple JSON, broken files."""

from __future__ import annotations

import json
from pathlib import Path

from mshale_fl.agents.partner.extract.output import read_spec
from mshale_fl.agents.partner.extract.pipeline import extract_corpus
from mshale_fl.agents.partner.extract.reader import (
    MAX_FILE_BYTES,
    Protocol,
    ReadFailure,
    html_to_text,
    read_corpus,
    read_one,
)

from .conftest import write

MARKDOWN = """---
sensitivity: internal
outcome: "Yield was 87 micrograms, the Zanzibar variant worked best"
---
# Plasmid miniprep

## Procedure

1. Pellet 1.5 ml of **overnight** culture at 14,000 x g for 1 min.
2. Resuspend the pellet in 250 µl [buffer P1](https://example.org/p1).
   Vortex until no clumps remain.
3) Add 250 µl lysis buffer and invert 5 times.
- Incubate at room temperature for 5 min.
"""

PROTOCOLS_IO_V3 = {
    "protocol": {
        "title": "Colony PCR &amp; gel",
        "steps": [
            {"components": [
                {"type_id": 6, "source": {"title": "Setup"}},
                {"type_id": 1, "source": {"description": "<p>Add <b>20&nbsp;µl</b> master mix to each PCR tube.</p>"
                                                         "<script>alert('not text')</script>"}},
                {"type_id": 4, "source": {"duration": 300, "title": "incubation"}},
            ]},
            {"components": [{"type_id": 1, "source": {"description": "<div>Incubate at 95&deg;C.</div><ul><li>Run 30 cycles.</li></ul>"}}]},
        ],
    }
}  # fmt: skip

PROTOCOLS_IO_V4 = {
    "payload": {
        "title": "Bacterial transformation",
        "steps": [
            {"step": json.dumps({"blocks": [{"key": "a", "text": "Thaw competent E. coli cells on ice."}], "entityMap": {}})},
            {"step": "<p>Heat shock at 42 &#176;C for 45 s.</p>"},
        ],
    }
}  # fmt: skip

SIMPLE = {"title": "Ethanol precipitation", "steps": ["Add 2 volumes of ethanol.", {"text": "Spin at 16,000 x g for 15 min."}]}


def test_text_and_markdown_become_title_and_steps(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "Title line\nAdd 5 ml water.\n\n  \nStep 2: Mix well.\n")
    markdown = read_one(write(tmp_path / "b.md", MARKDOWN), tmp_path)
    text = read_one(tmp_path / "a.txt", tmp_path)
    assert text == Protocol("a.txt", "Title line", ("Add 5 ml water.", "Mix well."))
    assert isinstance(markdown, Protocol)
    assert markdown.title == "Plasmid miniprep"
    assert markdown.steps == (
        "Pellet 1.5 ml of overnight culture at 14,000 x g for 1 min.",
        "Resuspend the pellet in 250 µl buffer P1. Vortex until no clumps remain.",
        "Add 250 µl lysis buffer and invert 5 times.",
        "Incubate at room temperature for 5 min.",
    )
    assert markdown.front_matter["sensitivity"] == "internal"
    assert "Zanzibar" not in markdown.text and "87" not in markdown.text


def test_protocols_io_exports_with_html_become_plain_steps(tmp_path: Path) -> None:
    v3 = read_one(write(tmp_path / "v3.json", json.dumps(PROTOCOLS_IO_V3)), tmp_path)
    v4 = read_one(write(tmp_path / "v4.json", json.dumps(PROTOCOLS_IO_V4)), tmp_path)
    assert isinstance(v3, Protocol) and isinstance(v4, Protocol)
    assert v3.title == "Colony PCR & gel"
    assert v3.steps == ("Add 20 µl master mix to each PCR tube. 300 s", "Incubate at 95°C.", "Run 30 cycles.")
    assert "alert" not in v3.text and "<" not in v3.text
    assert v4.steps == ("Thaw competent E. coli cells on ice.", "Heat shock at 42 °C for 45 s.")


def test_simple_json_is_read(tmp_path: Path) -> None:
    protocol = read_one(write(tmp_path / "s.json", json.dumps(SIMPLE)), tmp_path)
    assert protocol == Protocol("s.json", "Ethanol precipitation", ("Add 2 volumes of ethanol.", "Spin at 16,000 x g for 15 min."))


def test_html_to_text_drops_markup_and_scripts() -> None:
    assert html_to_text("<p>a&amp;b<br>c</p><style>p{}</style><script>x()</script>") == "\na&b\nc\n"


def test_broken_files_are_reported_with_a_reason_and_the_rest_go_on(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write(corpus / "good.txt", "Good\nAdd 5 ml water and mix.\n")
    write(corpus / "nested" / "deeper" / "good.md", MARKDOWN)
    write(corpus / "latin1.txt", "Titre\nChauffer à 37 °C.\n".encode("latin-1"))
    write(corpus / "broken.json", '{"title": "x", "steps": [')
    write(corpus / "nosteps.json", '{"title": "x"}')
    write(corpus / "empty.md", "")
    write(corpus / "title-only.txt", "Just a title\n")
    write(corpus / "scan.pdf", b"%PDF-1.4")
    write(corpus / "notes.ann", "T1\tAction 0 3\tAdd\n")  # not a protocol format: ignored
    write(corpus / ".hidden" / "x.txt", "Hidden\nAdd water.\n")  # hidden folders are skipped
    with (corpus / "huge.txt").open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)

    results = {r.source: r for r in read_corpus(corpus)}
    reasons = {source: r.reason for source, r in results.items() if isinstance(r, ReadFailure)}
    assert set(results) == {"good.txt", "nested/deeper/good.md", "latin1.txt", "broken.json", "nosteps.json",
                            "empty.md", "title-only.txt", "scan.pdf", "huge.txt"}  # fmt: skip
    assert "not UTF-8" in reasons["latin1.txt"]
    assert "invalid JSON" in reasons["broken.json"]
    assert "no list of steps" in reasons["nosteps.json"]
    assert reasons["empty.md"] == "file is empty"
    assert "no steps" in reasons["title-only.txt"]
    assert "unsupported format .pdf" in reasons["scan.pdf"]
    assert "too big" in reasons["huge.txt"]

    result = extract_corpus(corpus, tmp_path / "out")
    assert [p["source"] for p in result.protocols] == ["good.txt", "nested/deeper/good.md"]
    assert {u["source"] for u in result.unreadable} == set(reasons)
    assert all(u["reason"] for u in result.unreadable)


def test_front_matter_outcome_never_reaches_the_spec(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write(corpus / "p.md", MARKDOWN)
    result = extract_corpus(corpus, tmp_path / "out", config=None)
    (record,) = result.protocols
    spec_file = tmp_path / "out" / record["spec"]
    spec = read_spec(spec_file)
    raw = spec_file.read_text().replace(spec.content_hash, "")  # hex digits could spell "87" by chance
    for secret in ("Zanzibar", "variant", "Yield", "outcome", "87"):
        assert secret not in raw
    assert "outcome" not in (tmp_path / "out" / "manifest.json").read_text()
    assert [s.operation.value for s in spec.steps][:3] == ["centrifuge", "resuspend", "vortex"]
    assert record["sensitivity"] == "internal" and record["label_source"] == "front_matter"


def test_outcome_sidecars_are_not_read_as_protocols(tmp_path) -> None:
    from mshale_fl.agents.partner.extract.reader import corpus_files

    (tmp_path / "miniprep.md").write_text("# Miniprep\n1. Centrifuge at 14,000 x g for 1 min.\n")
    (tmp_path / "miniprep.md.outcome.json").write_text('{"outcome": 0.8}')
    (tmp_path / "other.json").write_text('{"title": "x", "steps": ["Mix well."]}')
    assert [p.name for p in corpus_files(tmp_path)] == ["miniprep.md", "other.json"]
