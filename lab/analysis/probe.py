"""A linear probe on frozen features, fitted in closed form (NumPy only; Alain & Bengio 2016).

    acc = probe_accuracy(x_train, y_train, x_test, y_test, l2=1e-3)

A binary property is regressed on the features by ridge least squares with labels in {-1, +1} (features
standardized on the training rows, a bias column unpenalized), and the probe's prediction is the sign: the
closed-form linear classifier, with no optimizer whose settings could favour one feature set.
"""

from __future__ import annotations

import numpy as np


def fit_probe(x, y, l2: float = 1e-3, balanced: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(w (D + 1,) with the bias last, mean (D,), sd (D,)): the ridge probe of boolean labels `y` (N,) on
    features `x` (N, D), in float64; `l2` is per unit of row weight. With `balanced`, each class's rows
    weigh 1 / (2 * its count) (weighted least squares), so a rare class counts as much as a common one."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, bool)
    t = np.where(y, 1.0, -1.0)
    if balanced:
        pos = max(int(y.sum()), 1)
        neg = max(int((~y).sum()), 1)
        r = np.where(y, 1.0 / (2 * pos), 1.0 / (2 * neg))
    else:
        r = np.full(len(y), 1.0 / max(len(y), 1))
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    z = np.concatenate([(x - mu) / sd, np.ones((x.shape[0], 1))], axis=1)
    reg = l2 * np.eye(z.shape[1])
    reg[-1, -1] = 0.0  # the bias is not shrunk
    w = np.linalg.solve(z.T @ (z * r[:, None]) + reg, z.T @ (r * t))
    return w, mu, sd


def predict_probe(params, x) -> np.ndarray:
    """(N,) boolean predictions of a probe from `fit_probe` on features `x` (N, D)."""
    w, mu, sd = params
    z = (np.asarray(x, np.float64) - mu) / sd
    return z @ w[:-1] + w[-1] > 0


def probe_accuracy(x_train, y_train, x_test, y_test, l2: float = 1e-3, balanced: bool = False) -> float:
    """Accuracy on the test rows of the probe fitted on the training rows; with `balanced`, the probe is
    fitted with balanced class weights and scored by balanced accuracy (the mean of the two classes'
    recalls: 0.5 for any constant prediction, whatever the base rate)."""
    y_test = np.asarray(y_test, bool)
    pred = predict_probe(fit_probe(x_train, y_train, l2, balanced), x_test)
    if not balanced:
        return float(np.mean(pred == y_test))
    recalls = [np.mean(pred[y_test == c] == c) for c in (True, False) if (y_test == c).any()]
    return float(np.mean(recalls))


def bracket_depth_inside(tokens_NT, open_id: int, close_id: int) -> np.ndarray:
    """(N, T) bool: position t lies inside an unclosed bracket of its own window, i.e. the count of
    `open_id` minus the count of `close_id` among positions 0..t is positive."""
    tok = np.asarray(tokens_NT)
    depth = np.cumsum((tok == open_id).astype(np.int64) - (tok == close_id).astype(np.int64), axis=1)
    return depth > 0
