"""Sentence sets: reading and validating sentence files (METRICS.md "Sentence files").

A JSON file holds `sentences` (required), optional `retrieval` items and `pairs`; a
plain text file holds one sentence a line (blank lines and lines starting with `#`
are skipped). Files are read as UTF-8; a leading byte-order mark is dropped in both
formats. Every problem is an InputError with a one-line message naming the file (and,
for a sentence, its line: `SentenceSet.where`).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .paths import FIXTURES


@dataclass(frozen=True)
class RetrievalItem:
    kind: str
    query: str
    positive: str
    negatives: tuple[str, ...]


@dataclass(frozen=True)
class SentenceSet:
    """An ordered sentence set plus optional retrieval items and contrast pairs."""

    name: str
    sentences: tuple[str, ...]
    retrieval: tuple[RetrievalItem, ...] = ()
    pairs: dict[str, tuple[str, str]] = field(default_factory=dict)
    source: str = ""
    # text -> where it is in the file ("line 3", "sentences[2], line 4"): for messages only,
    # never part of the content hash (issue 14: every sentence error names file and line)
    locations: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def where(self, text: str) -> str:
        """`FILE line N` (or `FILE sentences[i], line N`) of a text of this set, for messages."""
        source = self.source or self.name
        at = self.locations.get(text)
        return f"{source} {at}" if at else source

    def lines_of(self, texts) -> list[str]:
        """The locations of `texts` (as `where`, without the file), in order."""
        return [self.locations.get(t, "?") for t in texts]

    @property
    def sha256(self) -> str:
        """Content hash of everything that decides the measurement (not the file's bytes)."""
        payload = json.dumps(
            {
                "sentences": list(self.sentences),
                "retrieval": [[r.kind, r.query, r.positive, list(r.negatives)] for r in self.retrieval],
                "pairs": {k: list(v) for k, v in sorted(self.pairs.items())},
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def retrieval_pool(self) -> tuple[str, ...]:
        """Every distinct positive and negative text of every item, in first-seen order."""
        seen: dict[str, None] = {}
        for item in self.retrieval:
            seen.setdefault(item.positive)
            for neg in item.negatives:
                seen.setdefault(neg)
        return tuple(seen)

    @property
    def retrieval_kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.kind for r in self.retrieval))


def _fail(path: Path, why: str) -> InputError:
    return InputError(f"{path}: {why}")


def _text(value, path: Path, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"{where} must be a non-empty string, got {value!r}")
    return value.strip()


def load_sentence_set(path: str | Path) -> SentenceSet:
    """Read a sentence file (.json or plain text). A bare name like `core` means fixtures/core.json."""
    path = Path(path)
    if not path.exists() and not path.suffix and (FIXTURES / f"{path}.json").is_file():
        path = FIXTURES / f"{path}.json"
    if not path.exists():
        raise _fail(path, "sentence file not found")
    if path.is_dir():
        raise _fail(path, "is a directory, not a sentence file")
    if not path.is_file():  # a FIFO or a device would block or never end
        raise _fail(path, "is not a regular file (a FIFO or a device?); give a sentence file")
    try:
        raw = path.read_text(encoding="utf-8-sig")  # -sig: a leading BOM is dropped (issue 14)
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"cannot read sentence file ({exc.__class__.__name__}: {exc})") from None
    if path.suffix.lower() == ".json":
        return _from_json(raw, path)
    # lines as an editor numbers them (\n, \r\n or \r), not str.splitlines' extra breaks
    lines = re.split(r"\r\n|\r|\n", raw)
    kept = [(n, line.strip()) for n, line in enumerate(lines, 1)
            if line.strip() and not line.lstrip().startswith("#")]
    if not kept:
        if any(line.strip() for line in lines):
            raise _fail(path, "no sentences: every line is blank or a comment (starts with #)")
        raise _fail(path, "no sentences (the file is empty)")
    locations: dict[str, str] = {}
    for n, text in kept:
        locations.setdefault(text, f"line {n}")
    return SentenceSet(name=path.stem, sentences=tuple(t for _, t in kept), source=str(path), locations=locations)


def _from_json(raw: str, path: Path) -> SentenceSet:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise _fail(path, "top level must be a JSON object with a 'sentences' list")
    unknown = set(data) - {"name", "description", "sentences", "retrieval", "pairs"}
    if unknown:
        raise _fail(path, f"unknown field(s) {', '.join(k if k.isprintable() else repr(k) for k in sorted(unknown))}")
    sentences = data.get("sentences")
    if not isinstance(sentences, list):
        raise _fail(path, "'sentences' is required and must be a list of strings")
    if not sentences:
        raise _fail(path, "'sentences' is empty")
    texts = tuple(_text(s, path, f"sentences[{i}]") for i, s in enumerate(sentences))

    items = []
    retrieval = data.get("retrieval", [])
    if not isinstance(retrieval, list):
        raise _fail(path, "'retrieval' must be a list of items")
    for i, item in enumerate(retrieval):
        where = f"retrieval[{i}]"
        if not isinstance(item, dict):
            raise _fail(path, f"{where} must be an object with kind, query, positive, negatives")
        missing = {"query", "positive"} - set(item)
        if missing:
            raise _fail(path, f"{where} lacks {', '.join(sorted(missing))}")
        negatives = item.get("negatives", [])
        if not isinstance(negatives, list):
            raise _fail(path, f"{where}.negatives must be a list of strings")
        items.append(
            RetrievalItem(
                kind=_text(item.get("kind", "all"), path, f"{where}.kind"),
                query=_text(item["query"], path, f"{where}.query"),
                positive=_text(item["positive"], path, f"{where}.positive"),
                negatives=tuple(_text(n, path, f"{where}.negatives[{j}]") for j, n in enumerate(negatives)),
            )
        )

    pairs_raw = data.get("pairs", {})
    if not isinstance(pairs_raw, dict):
        raise _fail(path, "'pairs' must be an object mapping a name to two sentences")
    pairs = {}
    for name, pair in pairs_raw.items():
        if not isinstance(pair, list) or len(pair) != 2:
            raise _fail(path, f"pairs[{name!r}] must be a list of exactly two sentences")
        pairs[name] = (_text(pair[0], path, f"pairs[{name!r}][0]"), _text(pair[1], path, f"pairs[{name!r}][1]"))

    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise _fail(path, "'name' must be a non-empty string")
    if not _SAFE_NAME.fullmatch(name):
        raise _fail(path, f"'name' {name!r} must be a plain file name (no '/', no leading '.', at most 128 characters): it names the recorded baseline")
    return SentenceSet(name=name, sentences=texts, retrieval=tuple(items), pairs=pairs, source=str(path),
                       locations=_json_locations(raw, data))


# A set's name becomes part of file names (recorded baselines, chart context): keep it plain.
_SAFE_NAME = re.compile(r"[^/\\\x00-\x1f.][^/\\\x00-\x1f]{0,127}")
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', re.S)


def _json_paths(raw: str) -> dict[tuple, int]:
    """Line of every scalar value of a (valid) JSON text, by its path (keys and indices)."""
    out: dict[tuple, int] = {}
    stack: list[list] = []  # [kind, key or index, expecting a key]
    line, last = 1, 0
    for m in _TOKEN.finditer(raw):
        tok, pos = m.group(), m.start()
        line += raw.count("\n", last, pos)
        last = pos
        if tok in ("{", "["):
            stack.append(["o", None, True] if tok == "{" else ["a", 0, False])
        elif tok in ("}", "]"):
            if stack:
                stack.pop()
        elif tok == ":":
            if stack:
                stack[-1][2] = False
        elif tok == ",":
            if stack:
                top = stack[-1]
                if top[0] == "a":
                    top[1] += 1
                else:
                    top[2] = True
        elif stack and stack[-1][0] == "o" and stack[-1][2]:
            try:
                stack[-1][1] = json.loads(tok)
            except ValueError:
                stack[-1][1] = tok
        else:
            out[tuple(frame[1] for frame in stack)] = line
    return out


def _json_locations(raw: str, data: dict) -> dict[str, str]:
    """text -> "sentences[i], line N" (its first place) for the texts of a sentence JSON."""
    paths = _json_paths(raw)
    out: dict[str, str] = {}

    def add(text, path: tuple, label: str) -> None:
        if isinstance(text, str) and text.strip() and text.strip() not in out:
            n = paths.get(path)
            out[text.strip()] = label + (f", line {n}" if n else "")

    for i, text in enumerate(data.get("sentences", [])):
        add(text, ("sentences", i), f"sentences[{i}]")
    for name, pair in (data.get("pairs") or {}).items():
        for j, text in enumerate(pair):
            add(text, ("pairs", name, j), f"pairs[{name!r}][{j}]")
    for i, item in enumerate(data.get("retrieval") or []):
        add(item.get("query"), ("retrieval", i, "query"), f"retrieval[{i}].query")
        add(item.get("positive"), ("retrieval", i, "positive"), f"retrieval[{i}].positive")
        for j, text in enumerate(item.get("negatives") or []):
            add(text, ("retrieval", i, "negatives", j), f"retrieval[{i}].negatives[{j}]")
    return out
