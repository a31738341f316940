"""A draft as a file the extractor reads: Markdown, plain text, or a protocols.io JSON export.

Formats follow what `agents/partner/extract/reader.py` documents:

- `markdown` (`.md`): optional YAML front matter with the label, `# Title`, sometimes a
  `## Procedure` heading, then one numbered line per step line;
- `text` (`.txt`): the title on the first line, then the numbered lines (never front matter);
- `protocols.io-v3` (`.json`): `{"protocol": {..., "steps": [{"components": [{"type_id": 1,
  "source": {"description": "<div class=\"text-block\">...</div>"}}]}]}}`, the HTML of the
  protocols.io v3 API;
- `protocols.io-v4` (`.json`): `{"payload": {..., "steps": [{"step": "<Draft.js JSON>"}]}}`,
  each step a Draft.js document serialised to a string, as the v4 API returns it.

A JSON export that names its label carries it as a top-level `"sensitivity"` of the protocol
object. Rendering adds no quantity and no action: the text of every step line is the draft's.
"""

from __future__ import annotations

import html
import json
import random

from mshale_fl.corpus.protocol import Draft

SUFFIX = {"markdown": ".md", "text": ".txt", "protocols.io-v3": ".json", "protocols.io-v4": ".json"}


def _numbered(lines: list[str], numbering: str) -> list[str]:
    if "1" not in numbering:
        return [f"{numbering}{line}" for line in lines]
    return [numbering.replace("1", str(number), 1) + line for number, line in enumerate(lines, start=1)]


def _markdown(draft: Draft, numbering: str, label: str | None, rng: random.Random) -> str:
    parts = [f"---\nsensitivity: {label}\n---\n"] if label else []
    parts.append(f"# {draft.title}\n")
    if rng.random() < 0.5:
        parts.append("\n## Procedure\n")
    parts.extend(f"{line}\n" for line in _numbered([line.text for line in draft.lines], numbering))
    return "".join(parts)


def _text(draft: Draft, numbering: str) -> str:
    lines = _numbered([line.text for line in draft.lines], numbering)
    return f"{draft.title}\n\n" + "".join(f"{line}\n" for line in lines)


def _protocol_id(rng: random.Random) -> int:
    return rng.randrange(10_000, 99_999)


def _v3(draft: Draft, label: str | None, rng: random.Random) -> dict:
    steps = [
        {
            "id": number,
            "number": str(number),
            "components": [
                {"type_id": 1, "title": "description",
                 "source": {"description": f'<div class="text-blocks"><div class="text-block">{html.escape(line.text, quote=False)}</div></div>'}},
            ],
        }
        for number, line in enumerate(draft.lines, start=1)
    ]  # fmt: skip
    protocol: dict = {"id": _protocol_id(rng), "title": draft.title, "version_id": 0, "steps": steps}
    if label:
        protocol["sensitivity"] = label
    return {"protocol": protocol, "status_code": 0}


def _draft_js(text: str, key: str) -> str:
    document = {"blocks": [{"key": key, "text": text, "type": "unstyled", "depth": 0, "inlineStyleRanges": [],
                            "entityRanges": [], "data": {}}], "entityMap": {}}  # fmt: skip
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def _v4(draft: Draft, label: str | None, rng: random.Random) -> dict:
    steps = [
        {"id": number, "guid": f"{rng.getrandbits(64):016X}", "step": _draft_js(line.text, f"{rng.getrandbits(20):05x}"),
         "section": "Procedure"}
        for number, line in enumerate(draft.lines, start=1)
    ]  # fmt: skip
    payload: dict = {"id": _protocol_id(rng), "title": draft.title, "steps": steps}
    if label:
        payload["sensitivity"] = label
    return {"payload": payload, "status_code": 0}


def render(draft: Draft, file_format: str, *, numbering: str, label: str | None, rng: random.Random) -> bytes:
    """The file's bytes; `label` is written into the file (front matter or JSON field) only when given."""
    if file_format == "markdown":
        return _markdown(draft, numbering, label, rng).encode("utf-8")
    if file_format == "text":
        if label:
            raise ValueError("plain-text protocols never carry their label (labels.py)")
        return _text(draft, numbering).encode("utf-8")
    if file_format == "protocols.io-v3":
        document = _v3(draft, label, rng)
    elif file_format == "protocols.io-v4":
        document = _v4(draft, label, rng)
    else:
        raise ValueError(f"unknown format {file_format!r}; known: {sorted(SUFFIX)}")
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
