"""The self-organizing map (SOM) of the cohort model: a batch SOM (Kohonen's batch map).

Each epoch assigns every point to its best matching node with one matrix product, then moves
each node to the neighbourhood-weighted mean of the points; the Gaussian neighbourhood shrinks
geometrically so the last epochs are almost k-means. Initialised on the first two principal
components, so it is deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

CHUNK = 32_768  # events per distance block: 32k x 100 nodes float32 = 13 MB, cache friendly


def grid_coordinates(xdim: int, ydim: int) -> np.ndarray:
    """(x, y) of every node; node index = y * xdim + x."""
    y, x = np.divmod(np.arange(xdim * ydim), xdim)
    return np.column_stack([x, y]).astype(np.float64)


def initial_codes(data: np.ndarray, xdim: int, ydim: int) -> np.ndarray:
    """Nodes spread over the plane of the first two principal components (+-2 SD): a start that
    depends only on the data, so training is reproducible and the map does not twist."""
    x = np.asarray(data, dtype=np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / max(len(x) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:2]
    vectors = vectors[:, order]
    vectors *= np.where(vectors[np.abs(vectors).argmax(axis=0), range(vectors.shape[1])] < 0, -1, 1)
    sd = np.sqrt(np.maximum(values[order], 0.0))
    if len(sd) < 2:  # one marker: a line
        sd = np.append(sd, 0.0)
        vectors = np.column_stack([vectors, np.zeros_like(vectors[:, 0])])
    u = np.linspace(-2, 2, xdim) if xdim > 1 else np.zeros(1)
    v = np.linspace(-2, 2, ydim) if ydim > 1 else np.zeros(1)
    grid = grid_coordinates(xdim, ydim).astype(int)
    return (
        mean
        + (u[grid[:, 0]] * sd[0])[:, None] * vectors[:, 0]
        + (v[grid[:, 1]] * sd[1])[:, None] * vectors[:, 1]
    )


def nearest_node(data: np.ndarray, codes: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """Best matching node of every event: argmin |c|^2 - 2 x.c in blocks of `chunk` events, one
    float32 matrix product per block into a reused buffer."""
    x = np.ascontiguousarray(data, dtype=np.float32)
    c = np.ascontiguousarray(codes, dtype=np.float32)
    c2 = np.einsum("ij,ij->i", c, c)
    n = x.shape[0]
    out = np.empty(n, dtype=np.int32)
    buf = np.empty((min(chunk, max(n, 1)), c.shape[0]), dtype=np.float32)
    for start in range(0, n, chunk):
        block = x[start : start + chunk]
        d = np.matmul(block, c.T, out=buf[: len(block)])
        d *= -2.0
        d += c2
        out[start : start + len(block)] = d.argmin(axis=1)
    return out


def train_som(
    data: np.ndarray,
    xdim: int,
    ydim: int,
    epochs: int,
    radius: tuple[float, float] = (4.0, 0.3),
) -> np.ndarray:
    """Batch SOM codes (xdim*ydim, n_markers), float32. Deterministic: PCA start, no sampling."""
    x = np.ascontiguousarray(data, dtype=np.float32)
    n_nodes, n_dims = xdim * ydim, x.shape[1]
    grid = grid_coordinates(xdim, ydim)
    grid_d2 = ((grid[:, None, :] - grid[None, :, :]) ** 2).sum(axis=-1)
    codes = initial_codes(x, xdim, ydim)
    sigmas = np.geomspace(radius[0], radius[1], epochs) if epochs > 1 else np.array([radius[1]])
    sums = np.empty((n_nodes, n_dims))
    for sigma in sigmas:
        bmu = nearest_node(x, codes)
        counts = np.bincount(bmu, minlength=n_nodes).astype(np.float64)
        for j in range(n_dims):
            sums[:, j] = np.bincount(bmu, weights=x[:, j], minlength=n_nodes)
        h = np.exp(-grid_d2 / (2.0 * sigma * sigma))
        weight = h @ counts
        ok = weight > 1e-12
        codes[ok] = (h @ sums)[ok] / weight[ok, None]
    return codes.astype(np.float32)
