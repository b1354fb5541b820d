"""Geometry of learned vectors (embedding tables, activations), NumPy only: rows of unit length, the mean
cosine similarity of index pairs, principal components, nearest neighbours by cosine similarity."""

from __future__ import annotations

import numpy as np


def unit_rows(x) -> np.ndarray:
    """`x` (..., D) as float64, each row scaled to unit length."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def mean_cosine(unit, a, b) -> float:
    """The mean cosine similarity of rows a[i] and b[i] of a matrix of unit rows, over the pairs i."""
    return float(np.mean(np.sum(unit[a] * unit[b], axis=-1)))


def pca(x, k: int = 2) -> np.ndarray:
    """(N, k): the rows of `x` (N, D), centred, projected on their first k principal components (SVD)."""
    centered = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    return centered @ vt[:k].T


def nearest(unit, i: int, among, k: int) -> list[int]:
    """The k row indices in `among` whose rows of `unit` (unit rows) are most cosine-similar to row i,
    best first, i itself left out."""
    among = np.asarray(among)
    order = np.argsort(-(unit[among] @ unit[i]))
    return [int(among[j]) for j in order if among[j] != i][:k]
