"""Repository-level pytest configuration: the geometry-checks plugin and hypothesis profiles."""
import os

from hypothesis import HealthCheck, settings

# The plugin, for a clone on PYTHONPATH. Where the package is installed (editable or not), its
# pytest11 entry point has already registered it under this same name, so pytest skips this.
pytest_plugins = ["geometry_checks.plugin"]

# CI runs derandomized (the same examples every run); locally "dev" explores more.
settings.register_profile("ci", derandomize=True, max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
