"""pytest plugin for mutation runs only (pyproject.toml [tool.mutmut] passes `-p
benchmarks.mutmut_hypothesis`): hypothesis with 10 derandomized examples per property
instead of the suite's 60-100, so that each of ~1200 mutants runs its tests in seconds.
A mutation of a metric breaks it on most inputs; the oracle tests run in full.

It also keeps torch to one thread: mutmut forks each mutant's run from a server process,
and OpenMP's thread pool does not survive a fork (runs hang until mutmut's timeout).
Start mutmut with OMP_NUM_THREADS=1 as well (benchmarks/mutation.md)."""
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)

settings.register_profile("mutation", derandomize=True, max_examples=10, deadline=None,
                          suppress_health_check=list(HealthCheck))


def pytest_configure(config):
    settings.load_profile("mutation")  # after conftest.py loaded its own profile
