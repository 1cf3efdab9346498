"""Hypothesis profiles and the case counter of the fuzz tests.

``HYPOTHESIS_PROFILE`` picks the profile: ``ci`` (default, a small sample run by ``make test``) or
``fuzz`` (``make fuzz``: enough examples per test for ≥ 10,000 generated cases in total). Each fuzz
test counts the cases it actually ran (:func:`tests.fuzz.counter.tick`); the total is printed at the
end of the session and written as JSON to ``$FUZZ_REPORT`` when that variable is set.
"""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, settings

from . import counter

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.filter_too_much], print_blob=True)
# ci: a few examples per test (the whole fuzz folder in ≲ 60 s on 2 cores); derandomized so that
# `make test` is reproducible (`make fuzz` explores new cases every run).
settings.register_profile("ci", max_examples=12, derandomize=True, **_COMMON)
# fuzz: max_examples per test; 10 tests × 1100 ≥ 10,000 cases (small search spaces may end earlier).
settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "1100")), **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_terminal_summary(terminalreporter):
    if not counter.CASES:
        return
    total = sum(counter.CASES.values())
    terminalreporter.write_sep("-", f"fuzz: {total} generated cases ({settings().max_examples} max per test)")
    for name, n in sorted(counter.CASES.items()):
        terminalreporter.write_line(f"  {n:6d}  {name}")
    path = os.environ.get("FUZZ_REPORT")
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"total": total, "per_test": dict(counter.CASES)}, f, indent=1)
        os.replace(tmp, path)
