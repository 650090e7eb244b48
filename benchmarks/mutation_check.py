"""Finish and re-check a mutmut run of geometry_checks/metrics.py in one process per shard.

`mutmut run` forks one pytest run per mutant; on 2 busy cores with torch that is slow
(~10 s a mutant) and OpenMP-after-fork hangs show up as timeouts. mutmut's mutated
copy of the package (`mutants/`) switches mutants through the MUTANT_UNDER_TEST
environment variable, read at every call, so one Python process can run pytest once
per mutant without re-importing torch: this script does that for every mutant that
`mutmut results --all true` lists as not checked, survived, timeout or suspicious (all
of them with --all), with the current tests (tests/ is copied into mutants/ first),
and prints the tally and the kill rate.

    mutmut run                     # generates mutants/ and checks what it can (Ctrl-C is fine)
    python benchmarks/mutation_check.py --shards 2      # both shards, in parallel
    python benchmarks/mutation_check.py --all --shards 2

A mutant is killed when the selection fails (pytest exit 1), survives when it passes
(exit 0), and times out when one pytest run exceeds --timeout seconds (SIGALRM, then
counted apart). The pytest arguments are those of [tool.mutmut] in pyproject.toml.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
RECHECK = ("not checked", "survived", "timeout", "suspicious")


class Timeout(BaseException):
    pass


def forget_test_modules() -> None:
    """Drop the modules imported from mutants/tests and mutants/conftest.py, so that the next
    pytest.main imports them again: their module-level code (parametrize values computed by
    calling the metrics) must run under the current mutant, not the first one."""
    roots = (str(MUTANTS / "tests") + os.sep, str(MUTANTS / "conftest.py"))
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(roots):
            del sys.modules[name]


def mutmut_statuses() -> dict[str, str]:
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    statuses = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            statuses[name] = status
    return statuses


def pytest_args() -> list[str]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return ["-x", "-q", "--no-header", "-p", "no:randomly", *cfg.get("pytest_add_cli_args", []),
            *cfg.get("pytest_add_cli_args_test_selection", [])]


def run_shard(names: list[str], out: Path, timeout: int) -> None:
    """Run inside mutants/: one pytest.main per mutant; results as JSON lines in `out`."""
    import pytest

    os.chdir(MUTANTS)
    sys.path.insert(0, str(MUTANTS))
    args = pytest_args()

    timed_out = False

    def alarm(signum, frame):
        # pytest reports an exception raised inside a test as that test's failure (exit 1):
        # remember the timeout here so that it is not counted as a kill.
        nonlocal timed_out
        timed_out = True
        raise Timeout

    signal.signal(signal.SIGALRM, alarm)
    with open(out, "w") as handle:
        for name in names:
            os.environ["MUTANT_UNDER_TEST"] = name
            forget_test_modules()
            timed_out = False
            start = time.time()
            signal.alarm(timeout)
            try:
                with open(os.devnull, "w") as devnull:
                    stdout, sys.stdout = sys.stdout, devnull
                    try:
                        code = int(pytest.main(list(args)))
                    finally:
                        sys.stdout = stdout
                status = "timeout" if timed_out else {0: "survived", 1: "killed"}.get(code, f"error {code}")
            except Timeout:
                status = "timeout"
            finally:
                signal.alarm(0)
            handle.write(json.dumps({"name": name, "status": status, "seconds": round(time.time() - start, 1)}) + "\n")
            handle.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="re-check every mutant, killed ones too")
    ap.add_argument("--shards", type=int, default=1, help="processes in parallel")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per mutant")
    ap.add_argument("--shuffle", type=int, metavar="SEED",
                    help="check the mutants in a seeded random order (stopped early: an unbiased sample)")
    ap.add_argument("--names", metavar="FILE", help="check only the mutants named in FILE (one per line, "
                    "'status: name' lines too); with --all")
    ap.add_argument("--tally", action="store_true", help="only tally what the shards have written so far")
    ap.add_argument("--shard-of", nargs=3, metavar=("I", "N", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.tally:  # a run that was stopped: what its shards wrote so far
        rows = [json.loads(line) for out in sorted(MUTANTS.glob("mutation_check.*.jsonl"))
                for line in out.read_text().splitlines()]
        tally = {}
        for row in rows:
            tally[row["status"]] = tally.get(row["status"], 0) + 1
        n, killed = len(rows), tally.get("killed", 0)
        print(json.dumps(tally, sort_keys=True))
        if n:
            half = 1.96 * (killed / n * (1 - killed / n) / n) ** 0.5  # normal approximation
            print(f"killed {killed} of {n} checked ({100 * killed / n:.1f}% +- {100 * half:.1f} points, 95%)")
        for row in sorted(rows, key=lambda r: r["name"]):
            if row["status"] != "killed":
                print(f"{row['status']}: {row['name']}")
        return 0
    statuses = mutmut_statuses()
    todo = sorted(n for n, s in statuses.items() if args.all or s in RECHECK)
    if args.names:  # e.g. the survivors and timeouts of an earlier run's output
        wanted = {line.split(": ")[-1].strip() for line in Path(args.names).read_text().splitlines()}
        todo = [n for n in todo if n in wanted]
    if args.shuffle is not None:  # a partial run is then a uniform random sample of the mutants
        random.Random(args.shuffle).shuffle(todo)
    if args.shard_of:
        i, n, out = int(args.shard_of[0]), int(args.shard_of[1]), Path(args.shard_of[2])
        run_shard(todo[i::n], out, args.timeout)
        return 0

    if not MUTANTS.is_dir():
        print("no mutants/ directory: run `mutmut run` first", file=sys.stderr)
        return 2
    for src in (ROOT / "tests").glob("*.py"):  # the current tests, not mutmut's copy
        shutil.copy2(src, MUTANTS / "tests" / src.name)
    print(f"re-checking {len(todo)} of {len(statuses)} mutants in {args.shards} process(es)", file=sys.stderr)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    outs = [MUTANTS / f"mutation_check.{i}.jsonl" for i in range(args.shards)]
    procs = [subprocess.Popen([sys.executable, __file__, *(["--all"] if args.all else []),
                               *(["--shuffle", str(args.shuffle)] if args.shuffle is not None else []),
                               *(["--names", args.names] if args.names else []),
                               "--timeout", str(args.timeout), "--shard-of", str(i), str(args.shards), str(out)],
                              env=env, cwd=ROOT) for i, out in enumerate(outs)]
    for proc in procs:
        proc.wait()
    rechecked = {}
    for out in outs:
        for line in out.read_text().splitlines():
            row = json.loads(line)
            rechecked[row["name"]] = row["status"]
    final = {**statuses, **rechecked}
    tally: dict[str, int] = {}
    for status in final.values():
        tally[status] = tally.get(status, 0) + 1
    total = len(final)
    killed, timeouts = tally.get("killed", 0), tally.get("timeout", 0)
    print(json.dumps(tally, sort_keys=True))
    print(f"killed {killed} of {total} ({100 * killed / total:.1f}%); with timeouts counted as detected "
          f"{100 * (killed + timeouts) / total:.1f}%")
    for name in sorted(n for n, s in final.items() if s != "killed"):
        print(f"{final[name]}: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
