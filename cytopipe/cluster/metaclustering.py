"""Consensus metaclustering of the SOM nodes: FlowSOM's ConsensusClusterPlus step.

The node codes are resampled many times, clustered hierarchically (scipy's linkage cut at every
candidate k: the same trees scikit-learn's AgglomerativeClustering builds, computed once per
resample instead of once per k), the fraction of resamples in which two nodes fall together is
the consensus matrix, and the final metaclusters are a hierarchical clustering of 1 - consensus.
k is configured, or picked as the k with the lowest PAC (proportion of ambiguous clustering).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.cluster.hierarchy import cut_tree, linkage
from scipy.spatial.distance import squareform


def consensus_matrices(
    codes: np.ndarray,
    ks: Sequence[int],
    resamples: int,
    fraction: float,
    method: str,
    seed: int,
) -> np.ndarray:
    """(len(ks), n, n): how often two nodes fall in the same cluster when both are resampled."""
    n = len(codes)
    m = min(n, max(max(ks) + 1, round(fraction * n)))
    rng = np.random.default_rng([seed, 7])
    together = np.zeros((len(ks), n, n))
    sampled = np.zeros((n, n))
    for _ in range(resamples):
        idx = np.sort(rng.choice(n, m, replace=False))
        cuts = cut_tree(linkage(codes[idx], method=method), n_clusters=list(ks))
        block = np.ix_(idx, idx)
        sampled[block] += 1
        for j in range(len(ks)):
            lab = cuts[:, j]
            together[j][block] += lab[:, None] == lab[None, :]
    return together / np.maximum(sampled, 1)


def pac(consensus: np.ndarray, low: float = 0.1, high: float = 0.9) -> float:
    """Proportion of ambiguous clustering: node pairs together in neither (nearly) all nor
    (nearly) none of the resamples. Lower = a more stable k."""
    u = consensus[np.triu_indices(len(consensus), 1)]
    return float(np.mean((u > low) & (u < high))) if len(u) else 0.0


def consensus_metaclusters(
    codes: np.ndarray,
    k: int | None,
    k_range: tuple[int, int] = (8, 20),
    resamples: int = 100,
    fraction: float = 0.9,
    method: str = "average",
    seed: int = 0,
) -> tuple[np.ndarray, int, dict[int, float]]:
    """Metacluster (0..k-1) of every node, the k used and the PAC of every k evaluated.

    k=None picks the k in k_range with the lowest PAC, the largest of equals: merging stable
    groups is as unambiguous as keeping them apart, so the lowest PAC alone favours small k."""
    n = len(codes)
    ks = [k] if k is not None else list(range(k_range[0], min(k_range[1], n - 1) + 1))
    mats = consensus_matrices(codes, ks, resamples, fraction, method, seed)
    scores = {kk: pac(mats[i]) for i, kk in enumerate(ks)}
    # ties (typically PAC 0 for every k that only merges stable groups): the largest such k
    best = k if k is not None else min(ks, key=lambda kk: (round(scores[kk], 12), -kk))
    consensus = mats[ks.index(best)]
    dist = squareform(1.0 - consensus, checks=False)
    labels = cut_tree(linkage(dist, method="average"), n_clusters=[best])[:, 0]
    return labels.astype(np.int32), int(best), scores
