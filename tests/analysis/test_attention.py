"""Attention statistics on hand-made probability rows with known answers."""

import numpy as np

from lab.analysis.attention import row_entropy, weight_at_offset


def test_row_entropy_uniform_one_hot_and_zeros():
    w = np.array([[0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(row_entropy(w), [np.log(4), 0.0, np.log(2)], rtol=1e-12, atol=0)
    assert row_entropy(w).dtype == np.float64  # computed in float64 whatever the input
    assert row_entropy(np.ones((2, 3, 5, 5)) / 5).shape == (2, 3, 5)


def test_weight_at_offset_picks_the_key_k_back():
    w = np.arange(16.0).reshape(4, 4)  # w[t, s] = 4t + s
    np.testing.assert_array_equal(weight_at_offset(w, 1), [4.0, 9.0, 14.0])  # (1,0), (2,1), (3,2)
    np.testing.assert_array_equal(weight_at_offset(w, 3), [12.0])
    np.testing.assert_array_equal(weight_at_offset(np.stack([w, -w]), 2), [[8.0, 13.0], [-8.0, -13.0]])
