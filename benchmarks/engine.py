"""The measuring engine's own cost next to the forward pass, in one process (issue 13).

bench.py times whole processes, as a user runs them; on a virtual machine whose speed
drifts by 10-20% from one minute to the next, their ratios scatter by about as much as
the engine costs. This script takes the model load and the imports out and interleaves
the two steps, so that a drift moves both:

  (f) forward: `capture.iter_batches` over the set (length-sorted batches, all hidden
      states stacked, as measure_streaming runs it), nothing else;
  (e) engine:  `streaming._measure_batches` over the same batches, captured once and
      held in memory (every reduction, the PCA fits and the Measurement; no forward).

It prints the median seconds (wall) of each over R rounds, (f + e) / f, and the whole-process
ratio that implies, (floor + e) / floor, given the floor's seconds from bench.py
(--floor-seconds; default: f plus the load and import time measured here).

    python benchmarks/engine.py                      # MiniLM, 2,000 sentences, 5 rounds
    python benchmarks/engine.py --model mpnet --sublayers --rounds 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--sentences", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sublayers", action="store_true")
    p.add_argument("--floor-seconds", type=float, default=0.0,
                   help="bench.py's (a) for the same model, set and threads (else estimated here)")
    args = p.parse_args(argv)

    import gc

    from geometry_checks.cli import GC_THRESHOLD

    gc.set_threshold(*GC_THRESHOLD)  # as the command runs
    start = time.perf_counter()
    import torch

    from bench import sentence_file
    from geometry_checks import capture as C
    from geometry_checks import loader
    from geometry_checks import streaming as ST
    from geometry_checks.sentences import load_sentence_set

    torch.set_num_threads(args.threads)
    loaded = loader.load(loader.resolve(args.model), "cpu")
    setup = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        sentences = load_sentence_set(sentence_file(args.sentences, Path(tmp)))  # bench.py's set
    items = C.texts_of(sentences)
    ids = C.token_ids(loaded, items)
    counts = ST.content_counts(loaded, ids)
    held = list(C.iter_batches(loaded, items, 64, "auto", sublayers=args.sublayers, ids=ids))
    prov = {**loaded.provenance, "sentence_set": sentences.name, "sentence_set_sha256": sentences.sha256}

    def forward():
        for _ in C.iter_batches(loaded, items, 64, "auto", sublayers=args.sublayers, ids=ids, reuse=True):
            pass

    def engine():
        ST._measure_batches(sentences, items, counts, iter(held), ("mean",), ST.DEFAULT_MAX_PCA_TOKENS,
                            ST.PCA_SEED, args.sublayers, args.model, prov, None)

    engine()  # warm-up (first-call allocations, lazy imports)
    times: dict[str, list[float]] = {"f": [], "e": []}
    for _ in range(args.rounds):
        for key, step in (("f", forward), ("e", engine)):
            t = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - t)
    f, e = (statistics.median(times[k]) for k in "fe")
    floor = args.floor_seconds or f + setup
    print(f"model {args.model}, {args.sentences} sentences ({len(items)} texts), {args.threads} thread(s), "
          f"sublayers {args.sublayers}, {args.rounds} rounds (seconds, each round: "
          f"f {' '.join(f'{x:.2f}' for x in times['f'])}; e {' '.join(f'{x:.2f}' for x in times['e'])})")
    print(f"forward (f) {f:.2f} s, engine (e) {e:.2f} s: (f + e) / f = {(f + e) / f:.3f}")
    print(f"whole process: floor {floor:.2f} s ({'from bench.py' if args.floor_seconds else f'f + {setup:.2f} s load and imports'}),"
          f" (floor + e) / floor = {(floor + e) / floor:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
