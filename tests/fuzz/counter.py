"""Counts the generated cases each fuzz test ran (hypothesis runs the test body once per case)."""

from __future__ import annotations

import collections

CASES: collections.Counter[str] = collections.Counter()


def tick(name: str) -> None:
    """Record one generated case of test ``name``."""
    CASES[name] += 1
