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


def test_head_scores_average_each_head_over_sequences_and_queries():
    from lab.analysis.attention import head_scores

    prev = np.eye(4, k=-1)  # every query t > 0 on key t-1 (query 0 on nothing: a zero row)
    prev[0, 0] = 1.0
    uniform = np.tril(np.ones((4, 4))) / np.arange(1, 5)[:, None]  # a causal uniform row per query
    w = np.zeros((2, 1, 3, 2, 4, 4))  # (S, L, B, H, T, T)
    w[:, :, :, 0], w[:, :, :, 1] = prev, uniform
    entropy, at_1 = head_scores(w, 1)
    assert entropy.shape == at_1.shape == (2, 1, 2)
    np.testing.assert_allclose(entropy[0, 0], [0.0, np.mean(np.log([1, 2, 3, 4]))], rtol=1e-12)
    np.testing.assert_allclose(at_1[1, 0], [1.0, np.mean([1 / 2, 1 / 3, 1 / 4])], rtol=1e-12)
