"""Command line: `geometry-checks measure|report ...` (also `python -m geometry_checks`).

Thin: parse arguments, call the library, and turn every InputError into one line on
stderr with exit status 2 (never a traceback).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .errors import InputError
from .lab import DEFAULT_SENTENCES, Lab


def _model_paths(items: list[str]) -> dict[str, str]:
    from .registry import MODELS

    paths = {}
    for item in items or []:
        name, sep, directory = item.partition("=")
        if not sep or not name or not directory:
            raise InputError(f"--model-path expects NAME=DIR, got {item!r}")
        if name not in MODELS:
            raise InputError(f"--model-path {item}: unknown model {name!r} (registered: {', '.join(MODELS)})")
        paths[name] = directory
    return paths


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-path", action="append", default=[], metavar="NAME=DIR",
                   help="load registered model NAME from local directory DIR (repeatable)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16", "float16"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--allow-download", action="store_true",
                   help="download a registered model missing from the HF cache (default: never)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geometry-checks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("measure", help="measure every METRICS.md metric of one model on one sentence file")
    m.add_argument("--model", default="minilm", help="registered name (minilm, mxbai, colbert), directory or hub ID")
    m.add_argument("--sentences", default=str(DEFAULT_SENTENCES), help="sentence file (.json or .txt)")
    m.add_argument("--out", required=True, help="output JSON path")
    m.add_argument("--pooling", action="append", choices=("mean", "cls"),
                   help="pooling(s) for the pooled metrics (default: mean, plus cls where the model pools with CLS)")
    _common(m)

    r = sub.add_parser("report", help="run every check and write DIR/findings.md (+ findings.json)")
    r.add_argument("--model", action="append", default=None,
                   help="model(s) for the dense checks (default: minilm); article claims always get a row")
    r.add_argument("--sentences", default=str(DEFAULT_SENTENCES), help="sentence file (.json or .txt)")
    r.add_argument("--out", required=True, help="output directory")
    _common(r)
    return parser


def cmd_measure(args) -> int:
    lab = Lab(_model_paths(args.model_path), args.device, args.dtype, DEFAULT_SENTENCES, args.batch_size,
              allow_download=args.allow_download)
    from .measure import measure
    from .sentences import load_sentence_set

    sentences = load_sentence_set(args.sentences)
    loaded = lab.model(args.model)
    poolings = ["mean"] + [p for p in (args.pooling or ([loaded.spec.pooling])) if p != "mean"]
    result = measure(lab.states(args.model, sentences), sentences, tuple(dict.fromkeys(poolings)))
    result.save(args.out)
    print(f"wrote {args.out}: {len(result.curves)} curves, {len(result.scalars)} scalars "
          f"({result.model}, {result.depths} depths, {sentences.name})")
    return 0


def cmd_report(args) -> int:
    from .report import rows_from_lab, write_findings
    from .sentences import load_sentence_set

    load_sentence_set(args.sentences)  # one-line error before any model loads
    lab = Lab(_model_paths(args.model_path), args.device, args.dtype, args.sentences, args.batch_size,
              allow_download=args.allow_download)
    models = args.model or ["minilm"]
    out = Path(args.out)
    rows = rows_from_lab(lab, models)
    write_findings(rows, out / "findings.md")
    counts = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    print(f"wrote {out / 'findings.md'}: {len(rows)} checks ({', '.join(f'{n} {v}' for v, n in counts.items())})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return {"measure": cmd_measure, "report": cmd_report}[args.command](args)
    except InputError as exc:
        print(f"geometry-checks: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geometry-checks: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
