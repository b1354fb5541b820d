"""lab.data.tasks.Passkey: the item sits exactly where asked, once, and only the answer is scored."""

import jax
import numpy as np
import pytest

from lab.data.tasks import Passkey
from lab.errors import ConfigError


@pytest.mark.parametrize("seq_len,distance", [(12, 1), (12, 11), (40, 17)])
def test_the_value_sits_at_the_distance_asked_and_is_the_only_answer(seq_len, distance):
    task = Passkey(seq_len=12, n_filler=5, n_values=3)
    b = {k: np.asarray(v) for k, v in task.at_distance(jax.random.PRNGKey(0), 64, seq_len, distance).items()}
    x = b["inputs"]
    is_value = (x >= task.n_filler) & (x < task.query)
    assert x.shape == (64, seq_len) and (x[:, -1] == task.query).all()
    assert (is_value.sum(1) == 1).all() and is_value[:, seq_len - 1 - distance].all()
    assert (b["targets"][:, -1] == x[:, seq_len - 1 - distance]).all()
    assert b["mask"][:, -1].all() and not b["mask"][:, :-1].any()
    assert len(np.unique(b["targets"][:, -1])) == task.n_values  # every value occurs in 64 draws


def test_training_draws_every_distance():
    task = Passkey(seq_len=8, n_filler=5, n_values=3)
    x = np.asarray(task.sample({}, "train", jax.random.PRNGKey(1), 512)["inputs"])
    where = np.argmax((x >= task.n_filler) & (x < task.query), axis=1)
    assert sorted(set((task.seq_len - 1 - where).tolist())) == list(range(1, task.seq_len))


def test_bad_sizes_are_refused():
    # 0: the query would overwrite the value; >= seq_len: it is never placed (as any concrete number)
    for distance in (0, 12, 13, np.int32(0), np.array(12), jax.numpy.int32(12)):
        with pytest.raises(ConfigError, match=r"distance must be in 1\.\.11, got"):
            Passkey(seq_len=12).at_distance(jax.random.PRNGKey(0), 2, 12, distance)
    with pytest.raises(ConfigError, match="n_values must be >= 2"):
        Passkey(n_values=1)
