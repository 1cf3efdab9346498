"""Candidate selection of the post-processing: the top-k scores above the threshold, by decreasing
score with ties in index order, against a plain-Python reference (sorted (−score, index) pairs)."""

from __future__ import annotations

import pytest
import torch

from tensormask.modeling.postprocess import top_candidates


def reference(scores: torch.Tensor, threshold: float, k: int) -> tuple[list[int], list[float]]:
    threshold = torch.tensor(threshold, dtype=scores.dtype).item()  # compared in the scores' precision
    pairs = sorted((-s, i) for i, s in enumerate(scores.tolist()) if s > threshold)[:k]
    return [i for _, i in pairs], [-s for s, _ in pairs]


@pytest.mark.parametrize("n,levels,threshold,k", [
    (5000, 7, 0.0, 300),     # many ties, also at the k-th score
    (5000, 50, 0.3, 100),
    (2000, 2000, 0.05, 6000),  # fewer candidates than k
    (100, 3, 0.9, 10),       # nothing above the threshold
    (1000, 10, 0.0, 0),
])
def test_top_candidates_equal_stable_sort_reference(n, levels, threshold, k):
    g = torch.Generator().manual_seed(n + levels)
    scores = torch.randint(0, levels, (n,), generator=g).float() / levels + 0.05
    idx, val = top_candidates(scores, threshold, k)
    ref_idx, ref_val = reference(scores, threshold, k)
    assert idx.dtype == torch.int64 and idx.tolist() == ref_idx
    assert val.tolist() == ref_val
