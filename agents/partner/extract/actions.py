"""Action spans: which words of a protocol are the actions (`Add`, `spin down`, `pipetting`).

A small averaged-perceptron tagger (B/I/O over tokens, greedy left to right) whose features are
general: the word and its suffixes, its neighbours, whether it starts a line or a clause, and
whether the action lexicon (`operations.py`) knows it. Its weights are a table learned from the
WLP train split by `build_tagger.py` and shipped as `data/action_tagger.json`; nothing is
downloaded or learned at run time. The lexicon feature lets it recognise lab verbs it never saw
in training.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from importlib import resources

from mshale_fl.agents.partner.extract.operations import LEXICON, lemma
from mshale_fl.agents.partner.extract.tokens import CLAUSE_BREAKS, Token, tokenize

TAGS = ("O", "B", "I")
MODEL_RESOURCE = "action_tagger.json"
_LINKERS = frozenset({"and", "then", "or", "&", ",", "to", "before", "after", "while", "by", "until", "gently",
                      "carefully", "immediately", "briefly", "quickly", "slowly", "thoroughly", "please"})  # fmt: skip


def _shape(text: str) -> str:
    if text.isdigit() or text.replace(".", "").replace(",", "").isdigit():
        return "9"
    if not text[:1].isalpha():
        return "."
    if text.isupper() and len(text) > 1:
        return "AA"
    if text[:1].isupper():
        return "Aa"
    return "a"


@functools.lru_cache(maxsize=65536)
def _lexicon_entry(word: str) -> str | None:
    return lemma(word) if word[:1].isalpha() else None


_AUXILIARIES = frozenset({"be", "is", "are", "was", "were", "been", "being", "has", "have", "had", "will", "should",
                          "can", "could", "may", "might", "must", "would", "not"})  # fmt: skip


def token_features(tokens: Sequence[Token], index: int) -> list[str]:
    """Features of one token that do not depend on earlier decisions (computed once per token)."""
    token = tokens[index]
    word = token.text.lower()

    def word_at(offset: int) -> str:
        position = index + offset
        if position < 0:
            return "<s>"
        if position >= len(tokens):
            return "</s>"
        if offset < 0 and tokens[index].line_start and position < index:
            return "<s>"
        if offset > 0 and tokens[position].line_start:
            return "</s>"
        return tokens[position].text.lower()

    previous, following = word_at(-1), word_at(1)
    clause_start = token.line_start or previous in CLAUSE_BREAKS or previous in ("<s>", ",")
    entry = _lexicon_entry(word)
    known = entry is not None
    features = [
        "bias",
        f"w={word}",
        f"s3={word[-3:]}",
        f"s2={word[-2:]}",
        f"p3={word[:3]}",
        f"shape={_shape(token.text)}",
        f"w-1={previous}",
        f"w-2={word_at(-2)}",
        f"w+1={following}",
        f"w+2={word_at(2)}",
        f"w-1,w={previous}|{word}",
        f"w,w+1={word}|{following}",
        f"shape+1={_shape(tokens[index + 1].text) if index + 1 < len(tokens) else '</s>'}",
    ]
    if clause_start:
        features += ["clause", f"clause,w={word}", f"clause,lex={known}"]
    if token.line_start:
        features.append("line")
    if previous in _LINKERS:
        features.append(f"linker,lex={known}")
    if known:
        features += ["lex", f"lex,shape={_shape(token.text)}", f"lex,w+1={following}", f"lemma={entry}",
                     f"op={LEXICON[entry].value}", f"lex,suffix={word[-3:] if word != entry else ''}"]
        if previous in _AUXILIARIES:
            features.append("lex,after_auxiliary")
    return features


class ActionTagger:
    def __init__(self, weights: dict[str, list[float]]) -> None:
        self.weights = weights

    @classmethod
    @functools.cache
    def shipped(cls) -> ActionTagger:
        """The tagger trained on WLP train, loaded once per process from the package data."""
        data = resources.files("mshale_fl.agents.partner.extract").joinpath("data", MODEL_RESOURCE).read_text("utf-8")
        return cls(json.loads(data)["weights"])

    def scores(self, features: Sequence[str]) -> list[float]:
        totals = [0.0, 0.0, 0.0]
        weights = self.weights
        for feature in features:
            row = weights.get(feature)
            if row is not None:
                totals[0] += row[0]
                totals[1] += row[1]
                totals[2] += row[2]
        return totals

    def tag(self, tokens: Sequence[Token]) -> list[str]:
        tags: list[str] = []
        previous = "<s>"
        for index, token in enumerate(tokens):
            if token.line_start:
                previous = "<s>"
            features = token_features(tokens, index)
            features += [f"t-1={previous}", f"t-1,w={previous}|{token.text.lower()}"]
            totals = self.scores(features)
            if previous not in ("B", "I"):
                totals[2] = float("-inf")  # I only continues an action
            best = max(range(3), key=lambda k: (totals[k], -k))
            previous = TAGS[best]
            tags.append(previous)
        return tags


def spans_from_tags(tokens: Sequence[Token], tags: Sequence[str]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for token, tag in zip(tokens, tags, strict=True):
        if tag == "B" or (tag == "I" and not spans):
            spans.append((token.start, token.end))
        elif tag == "I":
            spans[-1] = (spans[-1][0], token.end)
    return spans


def find_actions(text: str, tagger: ActionTagger | None = None) -> list[tuple[int, int]]:
    """Character spans of the actions in `text`."""
    tokens = tokenize(text)
    tagger = tagger or ActionTagger.shipped()
    return spans_from_tags(tokens, tagger.tag(tokens))
