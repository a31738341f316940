"""Tokens with character offsets: words (with inner hyphens or apostrophes), numbers, single symbols."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?|\d+(?:[.,]\d+)*|\S")
# Where a new clause starts: an imperative verb is most likely right after one of these.
CLAUSE_BREAKS = frozenset({".", ";", ":", "!", "?", ")", "(", "•", "-", "–", "*"})


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    start: int
    end: int
    line_start: bool  # first token of its line


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    previous_end = 0
    for match in _TOKEN.finditer(text):
        line_start = not tokens or "\n" in text[previous_end : match.start()]
        tokens.append(Token(match.group(), match.start(), match.end(), line_start))
        previous_end = match.end()
    return tokens
