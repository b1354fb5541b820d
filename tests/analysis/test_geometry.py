import numpy as np
import pytest

from lab.analysis.geometry import mean_cosine, nearest, pca, unit_rows


def test_unit_rows_and_mean_cosine():
    unit = unit_rows([[3.0, 4.0], [0.0, 2.0], [-1.0, 0.0], [0.0, -5.0]])
    assert np.allclose(np.linalg.norm(unit, axis=-1), 1.0) and unit.dtype == np.float64
    assert mean_cosine(unit, [1, 2], [2, 3]) == pytest.approx(0.0)  # orthogonal pairs
    assert mean_cosine(unit, [1, 0], [3, 0]) == pytest.approx((-1.0 + 1.0) / 2)  # opposite, identical


def test_pca_finds_the_direction_of_largest_spread():
    rng = np.random.default_rng(0)
    t = rng.normal(size=50)
    x = np.outer(t, [1.0, 2.0, 2.0]) / 3 + 1e-3 * rng.normal(size=(50, 3)) + 5.0  # along (1, 2, 2)/3
    xy = pca(x, 2)
    assert xy.shape == (50, 2)
    assert abs(np.corrcoef(xy[:, 0], t)[0, 1]) > 0.999 and np.std(xy[:, 1]) < 1e-2
    assert np.allclose(xy.mean(axis=0), 0.0)


def test_nearest_ranks_by_cosine_among_the_candidates_and_leaves_out_the_query():
    angles = np.array([0.0, 0.1, 0.3, 2.0, 3.0])
    unit = unit_rows(np.stack([np.cos(angles), np.sin(angles)], axis=1))
    assert nearest(unit, 0, range(5), 3) == [1, 2, 3]
    assert nearest(unit, 0, [4, 3, 2], 2) == [2, 3]  # only the candidates, best first
    assert nearest(unit, 4, [0, 4], 5) == [0]
