"""A linear probe on frozen features, fitted in closed form (NumPy only; Alain & Bengio 2016).

    acc = probe_accuracy(x_train, y_train, x_test, y_test, l2=1e-3)

A binary property is regressed on the features by ridge least squares with labels in {-1, +1} (features
standardized on the training rows, a bias column unpenalized), and the probe's prediction is the sign: the
closed-form linear classifier, with no optimizer whose settings could favour one feature set.
"""

from __future__ import annotations

import numpy as np


def fit_probe(x, y, l2: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights (D,), bias-and-standardization (mean (D,), sd (D,)) packed as (w, mu, sd)) of the ridge
    probe of boolean labels `y` (N,) on features `x` (N, D), in float64; `l2` is per row (scaled by N)."""
    x = np.asarray(x, np.float64)
    t = np.where(np.asarray(y, bool), 1.0, -1.0)
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    z = np.concatenate([(x - mu) / sd, np.ones((x.shape[0], 1))], axis=1)
    reg = l2 * x.shape[0] * np.eye(z.shape[1])
    reg[-1, -1] = 0.0  # the bias is not shrunk
    w = np.linalg.solve(z.T @ z + reg, z.T @ t)
    return w, mu, sd


def predict_probe(params, x) -> np.ndarray:
    """(N,) boolean predictions of a probe from `fit_probe` on features `x` (N, D)."""
    w, mu, sd = params
    z = (np.asarray(x, np.float64) - mu) / sd
    return z @ w[:-1] + w[-1] > 0


def probe_accuracy(x_train, y_train, x_test, y_test, l2: float = 1e-3) -> float:
    """Accuracy on the test rows of the probe fitted on the training rows."""
    pred = predict_probe(fit_probe(x_train, y_train, l2), x_test)
    return float(np.mean(pred == np.asarray(y_test, bool)))


def bracket_depth_inside(tokens_NT, open_id: int, close_id: int) -> np.ndarray:
    """(N, T) bool: position t lies inside an unclosed bracket of its own window, i.e. the count of
    `open_id` minus the count of `close_id` among positions 0..t is positive."""
    tok = np.asarray(tokens_NT)
    depth = np.cumsum((tok == open_id).astype(np.int64) - (tok == close_id).astype(np.int64), axis=1)
    return depth > 0
