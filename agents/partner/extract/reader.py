"""Reading a partner's corpus folder: every protocol becomes a title and a list of step texts.

Formats (chosen by file suffix):
- `.txt`, `.md`, `.markdown`: the first non-empty line is the title (a Markdown `#` is dropped),
  every further non-empty line is a step; numbering (`1.`, `2)`, `Step 3:`) and bullets are
  removed, an indented line continues the step above it, Markdown headings after the title and
  inline markup (`**bold**`, `[text](url)`, backticks) are dropped. Markdown may open with YAML
  front matter between `---` lines; it is read as local metadata (`sensitivity: internal`) and
  never becomes part of the protocol text, so fields such as `outcome:` can never reach a spec.
- `.json`: a protocols.io export (v3: `steps[].components[].source.description` HTML, plus
  structured duration/temperature/amount components; v4: `steps[].step` as HTML or as a Draft.js
  JSON string; wrapped in `protocol` or `payload` or not), or a simple `{"title": ..., "steps":
  [...]}` whose steps are strings or objects with `text` / `description` / `step`.

HTML is turned into text with the standard library parser (no scripts run, no entities fetched,
`<script>`/`<style>` content dropped). A file that cannot be read (not UTF-8, invalid JSON, no
steps, larger than `MAX_FILE_BYTES`, unknown JSON layout) becomes a `ReadFailure` with the reason,
and reading goes on with the next file. Other file types are ignored, except office and PDF
documents, which are reported as unsupported so a partner knows they were not extracted.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import yaml

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_PROTOCOL_CHARS = 100_000
"""Longest protocol text read (title and steps; 7x the longest WLP protocol). A spec holds at most
500 steps, and annotating a text takes time that grows with its length, so a bigger text is refused
rather than left to occupy the extractor for minutes."""
TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
JSON_SUFFIXES = frozenset({".json"})
UNSUPPORTED_SUFFIXES = frozenset({".pdf", ".doc", ".docx", ".odt", ".rtf", ".pages", ".xls", ".xlsx"})
CONFIG_FILE_NAME = "mshale.toml"


@dataclass(frozen=True)
class Protocol:
    """One protocol as read: local only (its text never leaves the partner)."""

    source: str  # path relative to the corpus root, POSIX separators
    title: str
    steps: tuple[str, ...]
    front_matter: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def text(self) -> str:
        """The canonical text: title line, then one step per line (what is hashed and annotated)."""
        return "\n".join((self.title, *self.steps))


@dataclass(frozen=True)
class ReadFailure:
    source: str
    reason: str


class UnreadableProtocol(ValueError):
    """A file that looks like a protocol but cannot be read; the message is the reason."""


# ---------------------------------------------------------------- HTML


class _TextCollector(HTMLParser):
    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table"})
    _SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML fragment; block elements become line breaks."""
    if "<" not in markup and "&" not in markup:
        return markup
    collector = _TextCollector()
    collector.feed(markup)
    collector.close()
    return html.unescape("".join(collector.parts))


def _draft_js_text(value: str) -> str | None:
    """protocols.io v4 stores a step as a Draft.js document serialised to JSON; return its text."""
    stripped = value.lstrip()
    if not stripped.startswith("{"):
        return None
    try:
        document = json.loads(stripped)
    except (ValueError, RecursionError):  # nested deeper than the parser's stack: not a Draft.js document
        return None
    if not isinstance(document, dict) or not isinstance(document.get("blocks"), list):
        return None
    return "\n".join(str(block.get("text", "")) for block in document["blocks"] if isinstance(block, dict))


# ---------------------------------------------------------------- text cleaning

_NUMBERING = re.compile(r"^\s*(?:(?:step|stage)\s*\d+[a-z]?\s*[:.)-]\s*|\(?\d{1,3}[a-z]?[.)]\s+|\(?[a-z][.)]\s+(?=[A-Z])|[-*+•·▪◦]\s+)", re.IGNORECASE)
_MARKDOWN_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MARKDOWN_EMPHASIS = re.compile(r"(\*\*|__|\*|`+)(?=\S)(.+?)(?<=\S)\1")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u202f\u3000]+")


def clean_line(line: str) -> str:
    """One step's text: NFC, numbering and bullets removed, runs of spaces collapsed."""
    line = unicodedata.normalize("NFC", line).replace("\r", "")
    line = _NUMBERING.sub("", line, count=1)
    return _SPACES.sub(" ", line).strip()


def _markdown_inline(line: str) -> str:
    line = _MARKDOWN_LINK.sub(r"\1", line)
    return _MARKDOWN_EMPHASIS.sub(r"\2", line)


def _split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    if not text.startswith("---"):
        return {}, text
    lines = text.split("\n")
    if lines[0].strip() != "---":
        return {}, text
    for index in range(1, len(lines)):
        if lines[index].strip() in ("---", "..."):
            try:
                data = yaml.safe_load("\n".join(lines[1:index])) or {}
            except yaml.YAMLError as error:
                raise UnreadableProtocol(f"invalid YAML front matter: {error.__class__.__name__}") from None
            except RecursionError:
                raise UnreadableProtocol("YAML front matter is nested too deeply") from None
            if not isinstance(data, dict):
                raise UnreadableProtocol("front matter is not a mapping of keys to values")
            return data, "\n".join(lines[index + 1 :])
    raise UnreadableProtocol("front matter opened with --- is never closed")


def parse_text(text: str, *, markdown: bool) -> tuple[dict[str, Any], str, list[str]]:
    """(front matter, title, steps) of a plain-text or Markdown protocol."""
    text = text.lstrip("\ufeff")
    front_matter, body = _split_front_matter(text.replace("\r\n", "\n").replace("\r", "\n"))
    title: str | None = None
    steps: list[str] = []
    in_code_block = False
    for raw in body.split("\n"):
        if markdown and raw.lstrip().startswith("```"):
            in_code_block = not in_code_block
            continue
        if in_code_block or not raw.strip():
            continue
        is_heading = markdown and raw.lstrip().startswith("#")
        line = raw.lstrip().lstrip("#") if is_heading else raw
        if markdown:
            line = _markdown_inline(line)
        cleaned = clean_line(line)
        if not cleaned:
            continue
        if title is None:
            title = clean_line(raw.lstrip().lstrip("#")) if is_heading else cleaned
            continue
        if is_heading:
            continue  # section headings ("## Procedure") are structure, not steps
        continuation = raw[:1] in (" ", "\t") and not _NUMBERING.match(raw) and steps
        if continuation:
            steps[-1] = f"{steps[-1]} {cleaned}"
        else:
            steps.append(cleaned)
    return front_matter, title or "", steps


# ---------------------------------------------------------------- JSON

_STRUCTURED_COMPONENTS = (
    ("duration", lambda s: f"{s['duration']} s"),
    ("temperature", lambda s: f"{s['temperature']} {s.get('unit') or '°C'}"),
    ("amount", lambda s: f"{s['amount']} {s.get('unit') or ''}".strip()),
    ("concentration", lambda s: f"{s['concentration']} {s.get('unit') or ''}".strip()),
)


def _component_text(component: Any) -> str:
    if not isinstance(component, dict):
        return ""
    source = component.get("source")
    if not isinstance(source, dict):
        return ""
    if isinstance(source.get("description"), str):
        return html_to_text(source["description"])
    for key, render in _STRUCTURED_COMPONENTS:
        value = source.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return render(source)
    return ""


def _step_text(step: Any) -> str:
    if isinstance(step, str):
        return _draft_js_text(step) or html_to_text(step)
    if not isinstance(step, dict):
        return ""
    if isinstance(step.get("components"), list):
        return " ".join(t for t in (_component_text(c).strip() for c in step["components"]) if t)
    for key in ("step", "text", "description", "content", "body"):
        value = step.get(key)
        if isinstance(value, str):
            return _draft_js_text(value) or html_to_text(value)
    return ""


def parse_json(data: Any) -> tuple[dict[str, Any], str, list[str]]:
    """(metadata, title, steps) of a protocols.io export or a simple `{title, steps}` document."""
    document = data
    for wrapper in ("protocol", "payload", "data"):
        if isinstance(document, dict) and isinstance(document.get(wrapper), dict):
            document = document[wrapper]
    if not isinstance(document, dict) or not isinstance(document.get("steps"), list):
        raise UnreadableProtocol("JSON has no list of steps (expected a protocols.io export or {title, steps})")
    title = ""
    for key in ("title", "title_html", "protocol_name", "name"):
        if isinstance(document.get(key), str) and document[key].strip():
            title = html_to_text(document[key])
            break
    steps: list[str] = []
    for step in document["steps"]:
        for line in _step_text(step).split("\n"):
            cleaned = clean_line(line)
            if cleaned:
                steps.append(cleaned)
    metadata = {k: document[k] for k in ("sensitivity",) if isinstance(document.get(k), str)}
    return metadata, clean_line(title.replace("\n", " ")), steps


# ---------------------------------------------------------------- files


def read_protocol(path: Path, root: Path) -> Protocol:
    """Read one file; raises UnreadableProtocol with a reason a partner can act on."""
    source = path.relative_to(root).as_posix()
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise UnreadableProtocol(f"file is too big ({size} bytes; the limit is {MAX_FILE_BYTES})")
    if size == 0:
        raise UnreadableProtocol("file is empty")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableProtocol(f"not UTF-8 text (invalid byte at offset {error.start})") from None
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        try:
            data = json.loads(text)
        except ValueError as error:
            raise UnreadableProtocol(f"invalid JSON: {error.args[0] if error.args else error}") from None
        except RecursionError:
            raise UnreadableProtocol("JSON is nested too deeply to be a protocol") from None
        front_matter, title, steps = parse_json(data)
    else:
        front_matter, title, steps = parse_text(text, markdown=suffix != ".txt")
    if not steps:
        raise UnreadableProtocol("no steps found (a title line and at least one step line are needed)")
    length = len(title) + sum(len(step) + 1 for step in steps)
    if length > MAX_PROTOCOL_CHARS:
        raise UnreadableProtocol(
            f"protocol text is too long ({length} characters; the limit is {MAX_PROTOCOL_CHARS}): split it into protocols"
        )
    return Protocol(source=source, title=title, steps=tuple(steps), front_matter=front_matter)


OUTCOME_SIDECAR_SUFFIX = ".outcome.json"


def corpus_files(root: Path) -> list[Path]:
    """Candidate files under `root` in a stable order; hidden files and folders are skipped."""
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if path.name.lower().endswith(OUTCOME_SIDECAR_SUFFIX):
            continue  # a Tier 3 outcome beside its protocol: local training data, never a protocol
        if suffix in TEXT_SUFFIXES | JSON_SUFFIXES | UNSUPPORTED_SUFFIXES and path.name != CONFIG_FILE_NAME:
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def read_corpus(root: Path) -> Iterator[Protocol | ReadFailure]:
    """Every protocol of a corpus folder (recursively), or the reason it could not be read."""
    for path in corpus_files(root):
        yield read_one(path, root)


def read_one(path: Path, root: Path) -> Protocol | ReadFailure:
    source = path.relative_to(root).as_posix()
    if path.suffix.lower() in UNSUPPORTED_SUFFIXES:
        return ReadFailure(source, f"unsupported format {path.suffix.lower()} (export it as text, Markdown or JSON)")
    try:
        return read_protocol(path, root)
    except UnreadableProtocol as error:
        return ReadFailure(source, str(error))
    except OSError as error:
        return ReadFailure(source, f"cannot read file: {error.strerror or error}")
