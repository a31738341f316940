"""The extractor under hostile files: every file is extracted or skipped with a reason, and no spec carries free text.

A partner's corpus is whatever is on its disk: exports with odd encodings, truncated downloads,
machine-generated JSON, files that are not protocols at all. The promises checked here:

- `extract_file` never raises: a file becomes a spec or a `failure` reason (and `extract_corpus`
  lists every file as a protocol or as unreadable, with the reason);
- every string of a spec is a closed-vocabulary member or the salted hash, so no word of the file
  (the marker word below in particular) can reach it;
- a file over the size limit is refused from its size alone (its bytes are never read), a text too
  long to annotate in bounded time is refused with a reason, and deep nesting in JSON, YAML front
  matter, a Draft.js step or the partner config is a reason, not a RecursionError.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mshale_fl.agents.partner.extract.output import read_manifest, read_spec
from mshale_fl.agents.partner.extract.pipeline import (
    _by_line,
    _line_bounds,
    _relative_ranges,
    extract_corpus,
    extract_file,
)
from mshale_fl.agents.partner.extract.quantities import _candidates, find_quantities
from mshale_fl.agents.partner.extract.reader import MAX_FILE_BYTES, MAX_PROTOCOL_CHARS, ReadFailure, read_one
from mshale_fl.agents.partner.extract.sensitivity import ConfigError, load_config
from mshale_fl.agents.partner.extract.spans import annotate
from mshale_fl.schemas import vocabulary
from mshale_fl.schemas.feature_vector import FeatureVector
from mshale_fl.schemas.protocol_spec import ProtocolSpec

from .budget import budget
from .strategies import MARKER, ODD_UNICODE

SALT = b"\x07" * 32
HASH = re.compile(r"^[0-9a-f]{64}$")
VOCABULARY = frozenset(
    str(member.value)
    for enum in vars(vocabulary).values()
    if isinstance(enum, type) and issubclass(enum, Enum)
    for member in enum
)
SUFFIXES = [".txt", ".md", ".markdown", ".json"]


def spec_strings(node: object) -> Iterator[tuple[str, str]]:
    """(key, value) for every string value of a parsed spec document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                yield key, value
            else:
                yield from spec_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from spec_strings(value)


def assert_no_free_text(spec_json: bytes) -> None:
    """Every string of the spec is a vocabulary member (or the hash); the marker word appears nowhere."""
    ProtocolSpec.model_validate_json(spec_json)  # strict: no unknown field either
    assert MARKER.lower().encode() not in spec_json.lower()
    for key, value in spec_strings(json.loads(spec_json)):
        if key == "content_hash":
            assert HASH.match(value), value
        else:
            assert value in VOCABULARY, f"{key}={value!r} is not a closed-vocabulary member"


def assert_extracted_or_refused(path: Path, root: Path, *, with_vector: bool = False) -> str | None:
    """extract_file's outcome for `path`: None if a clean spec came out, else the failure reason."""
    result = extract_file(path, root, SALT, with_vector)
    if result.spec_json is None:
        assert result.failure, "a file that gives no spec needs a reason"
        assert MARKER.lower() not in result.failure.lower(), "a reason never quotes the file"
        return result.failure
    assert result.failure is None
    assert_no_free_text(result.spec_json)
    if with_vector:
        assert result.vector_json is not None
        FeatureVector.model_validate_json(result.vector_json)
    return None


@contextmanager
def corpus_with(name: str, content: bytes) -> Iterator[tuple[Path, Path]]:
    """A throw-away corpus folder holding one file (hypothesis examples cannot share pytest's tmp_path)."""
    with tempfile.TemporaryDirectory(prefix="hostile-corpus-") as folder:
        root = Path(folder)
        path = root / name
        path.write_bytes(content)
        yield path, root


# -- strategies ------------------------------------------------------------------------------------

numbers = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["0", "-0", "1,5", "14,000", "1e999", "9" * 400, "1" + "0" * 330, "0.000", "1:0", "1:100", "24:1",
                     "10x", "3x", "½", "two", "~5", "5-10", "30 s to 1", "1e-320"]),
)  # fmt: skip
units = st.sampled_from(["ml", "mL", "µl", "ul", "l", "mg", "g", "x g", "xg", "rpm", "K", "°C", "C", "ºC", "h", "hours",
                         "min", "s", "sec", "%", "M", "mM", "nM", "mg/ml", "ng/µl", "U", "units", "X", "bp", "kb",
                         "pH", "N", "k", "V", "overnight", "RT", "on ice", "room temperature"])  # fmt: skip
words = st.sampled_from(["Add", "add", "Centrifuge", "spin", "Incubate", "Dilute", "Run", "run the gel", "Load", "Pass",
                         "Wash 3x", "mix by inverting", "Do not vortex", "without", "then", "and", "with", "at", "for",
                         "in", "buffer", "water", "ethanol", "PBS", "Tris", "tube", "plate", "column", "E. coli",
                         "PCR", "gel", MARKER, MARKER.lower(), "the", "to", "of", ".", ",", ";", "(", ")", "#", "-", "*",
                         "1.", "Step 2:", "**", "`", "[x](y)", "<b>", "&amp;", "---"])  # fmt: skip
odd = st.sampled_from(ODD_UNICODE + ["\t", "\r", "\r\n", "\u2028", "\x0b", "\x85", "\u00a0"])
tokens = st.one_of(words, numbers, units, odd, st.text(max_size=6))
lab_lines = st.lists(tokens, max_size=14).map(" ".join)
lab_texts = st.lists(lab_lines, min_size=1, max_size=12).map("\n".join)

json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), lab_lines, st.text(max_size=20))
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(
        ["steps", "title", "step", "text", "description", "components", "source", "duration", "temperature", "unit",
         "amount", "concentration", "protocol", "payload", "data", "blocks", "sensitivity", "name", "x"]), children,
        max_size=5),
    max_leaves=30,
)  # fmt: skip
protocol_documents = st.one_of(
    json_values,
    st.fixed_dictionaries({"title": json_values, "steps": st.lists(json_values, max_size=5)}),
    st.fixed_dictionaries({"protocol": st.fixed_dictionaries({"steps": st.lists(st.fixed_dictionaries({
        "components": st.lists(st.fixed_dictionaries({"source": st.dictionaries(st.sampled_from(
            ["description", "duration", "temperature", "amount", "concentration", "unit"]), json_leaves)}),
            max_size=3)}), max_size=3)})}),
    st.fixed_dictionaries({"steps": st.lists(lab_texts.map(lambda text: json.dumps({"blocks": [{"text": text}]})),
                                             max_size=3)}),
)  # fmt: skip


# -- properties ------------------------------------------------------------------------------------


@given(suffix=st.sampled_from(SUFFIXES), content=st.binary(max_size=2_048))
@example(suffix=".txt", content=b"\x00" * 64)
@example(suffix=".md", content=b"---\n" + b"\xff\xfe" * 8)
@example(suffix=".json", content=b'{"steps": ["\xed\xa0\x80"]}')  # an encoded surrogate: not UTF-8
@budget(60)
def test_random_bytes_in_any_protocol_format_are_extracted_or_refused(suffix: str, content: bytes) -> None:
    with corpus_with(f"random{suffix}", content) as (path, root):
        assert_extracted_or_refused(path, root)


@given(suffix=st.sampled_from(SUFFIXES[:3]), title=lab_lines, body=lab_texts)
@example(suffix=".txt", title="T", body="Add " + "9" * 400 + " l of water")  # beyond the float range
@example(suffix=".txt", title="T", body="Incubate at 1e999 °C, dilute 1:" + "0" * 400)
@example(suffix=".md", title="T", body=f"Add 5 ml {MARKER}\u202e buffer\u200d e\u0301\u0301 \x00 at 37 °C")
@budget(40)
def test_odd_lab_text_gives_a_clean_spec_or_a_reason(suffix: str, title: str, body: str) -> None:
    content = f"{title}\n{body}\n".encode("utf-8", errors="surrogatepass")
    with corpus_with(f"odd{suffix}", content) as (path, root):
        assert_extracted_or_refused(path, root, with_vector=True)


@given(protocol_documents)
@example({"steps": [{"components": [{"source": {"duration": float("inf")}}]}]})
@example({"steps": [{"components": [{"source": {"temperature": float("nan"), "unit": MARKER}}]}]})
@example({"steps": [{"step": '{"blocks": ' + "[" * 20_000 + "]" * 20_000 + "}"}, "Add 5 ml water"]})
@budget(60)
def test_odd_json_protocols_give_a_clean_spec_or_a_reason(document: object) -> None:
    with corpus_with("odd.json", json.dumps(document).encode()) as (path, root):
        assert_extracted_or_refused(path, root, with_vector=True)


@given(front_matter=st.text(max_size=300), body=lab_texts)
@example(front_matter="sensitivity: [" * 400, body="Add 5 ml water")
@example(front_matter="sensitivity: !!python/object/apply:os.system ['true']", body="Add 5 ml water")
@budget(40)
def test_any_front_matter_is_read_or_refused(front_matter: str, body: str) -> None:
    content = f"---\n{front_matter}\n---\n# T\n{body}\n".encode("utf-8", errors="surrogatepass")
    with corpus_with("front.md", content) as (path, root):
        assert_extracted_or_refused(path, root)


# -- regressions: each crashed or hung the extractor before it was fixed ------------------------------


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("deep.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("deep-object.json", '{"a":' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
        ("deep-front-matter.md", "---\nsensitivity: " + "[" * 1_000 + "]" * 1_000 + "\n---\n# T\nAdd 5 ml water\n",
         "nested too deeply"),
        ("long.txt", "T\n" + "Add 5 ml water and spin at 300 x g for 5 min\n" * 90_000, "too long"),
        ("long-line.md", "# T\n" + "Add 5 ml water; " * 300_000, "too long"),
    ],
)  # fmt: skip
def test_pathological_files_are_refused_with_a_reason(tmp_path: Path, name: str, content: str, reason: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert path.stat().st_size <= MAX_FILE_BYTES, "under the size limit: refused for what it holds"
    result = read_one(path, tmp_path)
    assert isinstance(result, ReadFailure)
    assert reason in result.reason
    assert extract_file(path, tmp_path, SALT).failure == result.reason


def test_a_deeply_nested_draft_js_step_is_read_as_plain_text(tmp_path: Path) -> None:
    step = '{"blocks": ' + "[" * 20_000 + "]" * 20_000 + "}"
    path = tmp_path / "draft.json"
    path.write_text(json.dumps({"steps": [step, "Add 5 ml water"]}), encoding="utf-8")
    result = read_one(path, tmp_path)
    assert not isinstance(result, ReadFailure), result
    assert result.steps[-1] == "Add 5 ml water"


@pytest.mark.parametrize("extra", [0, 1])
def test_the_text_limit_is_exact(tmp_path: Path, extra: int) -> None:
    step = "Add 5 ml water"
    title = "T" * (MAX_PROTOCOL_CHARS - 1000 * (len(step) + 1) + extra)
    path = tmp_path / "limit.txt"
    path.write_text(title + "\n" + (step + "\n") * 1000, encoding="utf-8")
    result = read_one(path, tmp_path)
    if extra:
        assert isinstance(result, ReadFailure)
        assert result.reason.startswith(f"protocol text is too long ({MAX_PROTOCOL_CHARS + 1} characters")
    else:
        assert not isinstance(result, ReadFailure) and len(result.text) == MAX_PROTOCOL_CHARS


def test_numbers_beyond_the_float_range_are_no_quantity_and_no_crash(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    path.write_text("T\nAdd " + "9" * 400 + " l of water\nIncubate at 37 °C for 10 min\n", encoding="utf-8")
    result = extract_file(path, tmp_path, SALT, with_vector=True)
    assert result.failure is None and result.spec_json is not None
    spec = json.loads(result.spec_json)
    assert [step["operation"] for step in spec["steps"]] == ["add", "incubate"]
    assert spec["steps"][0]["quantities"] == []
    assert {q["kind"] for q in spec["steps"][1]["quantities"]} == {"temperature", "duration"}


def test_a_yaml_alias_bomb_as_a_label_is_not_expanded(tmp_path: Path) -> None:
    """Nine levels of nine aliases stand for 387 million items: printing the label would never end."""
    levels = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    levels += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    path = tmp_path / "bomb.md"
    path.write_text("---\n" + "\n".join(levels) + "\nsensitivity: *a8\n---\n# T\n1. Add 5 ml water\n", encoding="utf-8")
    tracemalloc.start()
    try:
        result = extract_file(path, tmp_path, SALT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.failure is None
    assert result.front_matter_label == "<list>"  # no label: treated as full-ip and reported
    assert peak < 200 * 1024 * 1024


def test_a_huge_file_is_refused_from_its_size_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with path.open("wb") as handle:  # sparse: 2 GB that take no disk and must never be read
        handle.truncate(2 * 1024**3)
    tracemalloc.start()
    try:
        result = read_one(path, tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(result, ReadFailure)
    assert result.reason == f"file is too big ({2 * 1024**3} bytes; the limit is {MAX_FILE_BYTES})"
    assert peak < 1024 * 1024


@pytest.mark.parametrize(
    "content",
    ["a = " + "[" * 100_000 + "]" * 100_000, "a = " + "{b=" * 10_000 + "1" + "}" * 10_000, "\x00\xff", "[sensitivity]\nrules = 5"],
)
def test_a_hostile_partner_config_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "mshale.toml"
    path.write_bytes(content.encode("utf-8", errors="surrogateescape"))
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path)


# -- a whole hostile corpus --------------------------------------------------------------------------


def test_a_corpus_of_hostile_files_lists_every_file_as_extracted_or_unreadable(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    good = f"# {MARKER} miniprep\n1. Add 250 µl {MARKER} buffer to the pellet.\n2. Centrifuge at 14,000 x g for 1 min.\n"
    files: dict[str, bytes] = {
        "good.md": good.encode(),
        "rtl-and-zero-width.md": ("# T\n1. Add\u200b 5\u202e ml\u200d water\ufeff at 37 \u00b0C\x00\n").encode(),
        "combining.txt": "T\nIncubate a\u0301\u0301t 37 \u00b0C for 5 mi\u0308n\n".encode(),
        "latin1.txt": "T\nAdd 5 ml water at 37 \u00b0C\n".encode("latin-1"),
        "random.json": os.urandom(2048),
        "random.txt": os.urandom(2048),
        "empty.md": b"",
        "only-title.txt": b"Just a title\n",
        "not-a-protocol.json": json.dumps({"rows": [1, 2, 3]}).encode(),
        "nan.json": b'{"steps": [{"components": [{"source": {"duration": NaN}}]}, "Add 5 ml water"]}',
        "deep.json": b"[" * 100_000 + b"]" * 100_000,
        "too-long.txt": b"T\n" + b"Add 5 ml water\n" * 20_000,
        "huge.md": b"",  # made sparse below
        "unterminated.md": b"---\nsensitivity: published\n# T\n1. Add 5 ml water\n",
        "report.pdf": b"%PDF-1.7",
        "folder.json/inner.txt": b"T\nAdd 5 ml water\n",
        "\u202eevil\u200b.txt": b"T\nAdd 5 ml water\n",
        "notes/\u0645\u0644\u0627\u062d\u0638\u0629.md": "# T\n1. Add 5 ml water\n".encode(),
    }
    for name, content in files.items():
        path = corpus / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    with (corpus / "huge.md").open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    os.symlink("/dev/zero", corpus / "zero.txt")  # not a regular file: ignored, never read
    os.mkfifo(corpus / "pipe.md")  # reading it would block forever: ignored
    os.symlink(corpus / "loop", corpus / "loop")  # a symlink to itself

    output = tmp_path / "out"
    result = extract_corpus(corpus, output, tier=2, local_mode=True)

    listed = [record["source"] for record in result.protocols] + [record["source"] for record in result.unreadable]
    assert sorted(listed) == sorted(files)  # each once; the fifo, the symlinks and the folder are not files
    reasons = {record["source"]: record["reason"] for record in result.unreadable}
    assert reasons["deep.json"] == "JSON is nested too deeply to be a protocol"
    assert reasons["huge.md"] == f"file is too big ({MAX_FILE_BYTES + 1} bytes; the limit is {MAX_FILE_BYTES})"
    assert reasons["too-long.txt"].startswith("protocol text is too long")
    assert reasons["latin1.txt"].startswith("not UTF-8 text")
    assert reasons["report.pdf"].startswith("unsupported format")
    assert {"good.md", "rtl-and-zero-width.md", "combining.txt", "nan.json"} <= {r["source"] for r in result.protocols}
    for record in result.protocols:
        assert_no_free_text((output / record["spec"]).read_bytes())
        read_spec(output / record["spec"])
    manifest_text = (output / "manifest.json").read_text(encoding="utf-8")
    assert read_manifest(output) == result.manifest
    # The manifest is local (it names the files), but its reasons never quote a file's content.
    assert all(MARKER.lower() not in record["reason"].lower() for record in result.unreadable)
    assert MARKER.lower() not in "".join(json.dumps(record["decision"]) for record in result.protocols).lower()
    assert "manifest_version" in manifest_text


# -- the linear-time span bookkeeping agrees with the quadratic scans it replaced -------------------


def _quadratic_find_quantities(text: str) -> list:
    """find_quantities as first written: each candidate checked against every span taken so far."""
    candidates = sorted(_candidates(text), key=lambda c: (-(c[0].end - c[0].start), -c[1], c[0].start, c[0].label))
    taken, occupied = [], []
    for mention, _priority in candidates:
        if any(mention.start < end and start < mention.end for start, end in occupied):
            continue
        taken.append(mention)
        occupied.append((mention.start, mention.end))
    return sorted(taken, key=lambda m: (m.start, m.end))


@given(lab_texts)
@example("Spin 5 min at 4 °C, 30 s to 1 min, 1:100, 55-60 °C, 10x PBS, 3 x 1 ml, 13K, 1,5 ml")
@budget(60)
def test_span_bookkeeping_matches_the_quadratic_scans(text: str) -> None:
    assert find_quantities(text) == _quadratic_find_quantities(text)
    spans = annotate(text)
    bounds = list(_line_bounds(text))
    grouped = _by_line(spans, bounds)
    for number, (start, end) in enumerate(bounds):
        assert grouped.get(number, []) == [s for s in spans if start <= s.start and s.end <= end]
    ranges = [(s.start, s.end) for s in spans if s.label == "Action"]
    segments = [bound for bound in bounds if bound[1] > bound[0]][:5]
    relative, offset = [], 0
    for start, end in segments:
        relative += [(a - start + offset, b - start + offset) for a, b in ranges if start <= a and b <= end]
        offset += end - start + 1
    assert _relative_ranges(segments, ranges, [a for a, _ in ranges]) == relative
