"""Train the action tagger's weight table from a WLP split (run by hand; the result is committed).

    python -m mshale_fl.agents.partner.extract.build_tagger --wlp ../shared/corpora/wlp/train

An averaged perceptron over the features of `actions.token_features`, trained with its own
predicted previous tag (as it is used), shuffled with a fixed seed so the table is reproducible.
Only the train split is used: dev stays for checking, and held-out data is never seen.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

from mshale_fl.agents.partner.extract.actions import (
    MODEL_RESOURCE,
    TAGS,
    ActionTagger,
    token_features,
)
from mshale_fl.agents.partner.extract.evaluation import read_brat_spans, wlp_documents
from mshale_fl.agents.partner.extract.tokens import Token, tokenize

Sentence = tuple[list[Token], list[str], list[list[str]]]


def gold_tags(tokens: list[Token], actions: list[tuple[int, int]]) -> list[str]:
    tags = ["O"] * len(tokens)
    for start, end in actions:
        inside = [i for i, t in enumerate(tokens) if t.start >= start and t.end <= end]
        for position, index in enumerate(inside):
            tags[index] = "B" if position == 0 else "I"
    return tags


def load_documents(folder: Path) -> list[Sentence]:
    documents = []
    for text_path, annotation in wlp_documents(folder):
        with text_path.open(encoding="utf-8", newline="") as handle:
            text = handle.read()
        actions = [(s, e) for label, s, e in read_brat_spans(annotation) if label == "Action"]
        tokens = tokenize(text)
        features = [token_features(tokens, i) for i in range(len(tokens))]
        documents.append((tokens, gold_tags(tokens, actions), features))
    return documents


class AveragedPerceptron:
    def __init__(self) -> None:
        self.weights: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        self.totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        self.stamps: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.instances = 0

    def predict(self, features: list[str], previous: str) -> int:
        totals = [0.0, 0.0, 0.0]
        for feature in features:
            row = self.weights.get(feature)
            if row is not None:
                totals[0] += row[0]
                totals[1] += row[1]
                totals[2] += row[2]
        if previous not in ("B", "I"):
            totals[2] = float("-inf")
        return max(range(3), key=lambda k: (totals[k], -k))

    def update(self, features: list[str], truth: int, guess: int) -> None:
        self.instances += 1
        if truth == guess:
            return
        for feature in features:
            weights, totals, stamps = self.weights[feature], self.totals[feature], self.stamps[feature]
            for tag, delta in ((truth, 1.0), (guess, -1.0)):
                totals[tag] += (self.instances - stamps[tag]) * weights[tag]
                stamps[tag] = self.instances
                weights[tag] += delta

    def averaged(self) -> dict[str, list[float]]:
        result = {}
        for feature, weights in self.weights.items():
            totals, stamps = self.totals[feature], self.stamps[feature]
            row = [(totals[t] + (self.instances - stamps[t]) * weights[t]) / self.instances for t in range(3)]
            row = [round(x, 3) for x in row]
            if any(abs(x) >= 0.001 for x in row):
                result[feature] = row
        return result


def train(documents: list[Sentence], epochs: int = 8, seed: int = 13) -> dict[str, list[float]]:
    model = AveragedPerceptron()
    order = list(range(len(documents)))
    generator = random.Random(seed)
    for _ in range(epochs):
        generator.shuffle(order)
        for index in order:
            tokens, tags, features = documents[index]
            previous = "<s>"
            for position, token in enumerate(tokens):
                if token.line_start:
                    previous = "<s>"
                word = token.text.lower()
                full = [*features[position], f"t-1={previous}", f"t-1,w={previous}|{word}"]
                guess = model.predict(full, previous)
                model.update(full, TAGS.index(tags[position]), guess)
                previous = TAGS[guess]
    return model.averaged()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wlp", type=Path, required=True, help="a WLP split folder (train)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "data" / MODEL_RESOURCE)
    args = parser.parse_args()
    documents = load_documents(args.wlp)
    weights = train(documents, epochs=args.epochs)
    ActionTagger(weights)  # the table must load as the tagger uses it
    payload = {
        "description": "Averaged-perceptron weights (O, B, I) of the WLP action tagger; see build_tagger.py",
        "trained_on": f"{args.wlp.name} ({len(documents)} protocols)",
        "epochs": args.epochs,
        "tags": list(TAGS),
        "weights": weights,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {len(weights)} features to {args.output}")


if __name__ == "__main__":
    main()
