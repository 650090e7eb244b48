"""Deterministic, varied English sentences for benchmarks and scale tests.

A small template grammar (subject, verb, object, optional adverbial, optional
subordinate clause) drawn with a seeded `random.Random`, so `generate(n, seed)` is the
same list on every machine and every Python >= 3.10. Sentences are distinct and range
from about 4 to 30 words; no network, no data files.

    python benchmarks/gen_sentences.py 2000 --out /tmp/gen2000.json   # + core.json's pairs/retrieval
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "fixtures" / "core.json"

_DET = ["the", "a", "one", "every", "that", "this", "our", "their", "some"]
_ADJ = ["old", "young", "quiet", "angry", "tired", "clever", "local", "foreign", "small", "huge", "ancient",
        "modern", "careful", "nervous", "famous", "unknown", "wealthy", "hungry", "brave", "stubborn"]
_NOUN = ["farmer", "teacher", "engineer", "doctor", "river", "storm", "company", "bank", "child", "dog",
         "committee", "scientist", "train", "city", "market", "orchestra", "pilot", "reporter", "garden",
         "volcano", "robot", "nurse", "judge", "village", "startup", "museum", "satellite", "chef", "team",
         "student", "factory", "ship", "senator", "painter", "library", "forest", "hospital", "court"]
_VERB = [("repaired", "repair"), ("visited", "visit"), ("ignored", "ignore"), ("praised", "praise"),
         ("flooded", "flood"), ("bought", "buy"), ("sold", "sell"), ("painted", "paint"), ("studied", "study"),
         ("built", "build"), ("destroyed", "destroy"), ("measured", "measure"), ("watched", "watch"),
         ("followed", "follow"), ("helped", "help"), ("warned", "warn"), ("questioned", "question"),
         ("described", "describe"), ("rejected", "reject"), ("welcomed", "welcome"), ("cleaned", "clean"),
         ("designed", "design"), ("tested", "test"), ("defended", "defend"), ("replaced", "replace")]
_OBJ_NOUN = ["bridge", "report", "contract", "bicycle", "window", "proposal", "harvest", "vaccine", "song",
             "manuscript", "engine", "budget", "painting", "road", "machine", "letter", "theory", "meal",
             "building", "election", "schedule", "network", "photograph", "recipe", "telescope"]
_ADV = ["yesterday", "last winter", "before dawn", "after the meeting", "in the rain", "without warning",
        "for three hours", "at the end of the season", "during the long drought", "across the valley",
        "near the harbour", "under strict supervision", "despite the protests", "with great care",
        "for the second time this year", "in front of a large crowd"]
_SUB = ["because the weather had changed", "although nobody expected it", "while the others were asleep",
        "after prices rose sharply", "before the deadline passed", "since the old rules no longer applied",
        "even though the budget was tight", "when the lights went out", "so that the children could play",
        "unless the council objects", "as the sun went down over the hills"]
_NEG = ["did not", "never", "almost", "quickly", "reluctantly", "finally", "secretly", "proudly"]


def _noun_phrase(rng: random.Random, nouns: list[str]) -> str:
    words = [rng.choice(_DET)]
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        words.append(rng.choice(_ADJ))
    words.append(rng.choice(nouns))
    if rng.random() < 0.2:
        words += ["of", "the", rng.choice(_NOUN)]
    return " ".join(words)


def sentence(rng: random.Random) -> str:
    subject = _noun_phrase(rng, _NOUN)
    past, present = rng.choice(_VERB)
    verb = past
    if rng.random() < 0.25:
        adverb = rng.choice(_NEG)
        verb = f"did not {present}" if adverb == "did not" else f"{adverb} {past}"
    parts = [subject, verb, _noun_phrase(rng, _OBJ_NOUN if rng.random() < 0.7 else _NOUN)]
    if rng.random() < 0.6:
        parts.append(rng.choice(_ADV))
    if rng.random() < 0.35:
        parts.append(rng.choice(_SUB))
    if rng.random() < 0.1:
        parts += ["and", rng.choice(_VERB)[0], _noun_phrase(rng, _OBJ_NOUN)]
    text = " ".join(parts)
    return text[0].upper() + text[1:]


def generate(n: int, seed: int = 0) -> list[str]:
    """n distinct sentences, the same for the same (n, seed); generate(n) is a prefix of generate(m > n)."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen.setdefault(sentence(rng))
    return list(seen)


def sentence_file(n: int, seed: int = 0, with_core: bool = True) -> dict:
    """A sentence-file dict: n generated sentences, plus core.json's pairs and retrieval items
    (so that every metric is computed) when with_core."""
    data = {"name": f"generated-{n}-seed{seed}", "sentences": generate(n, seed)}
    if with_core:
        core = json.loads(CORE.read_text())
        data["retrieval"] = core.get("retrieval", [])
        data["pairs"] = core.get("pairs", {})
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-core", action="store_true", help="sentences only, no pairs or retrieval items")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    Path(args.out).write_text(json.dumps(sentence_file(args.n, args.seed, not args.no_core), indent=1))


if __name__ == "__main__":
    main()
