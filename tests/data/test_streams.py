"""MemberStreams: each member's loss is on its own stream's windows, only inside the stream's valid length;
validation is one shared stream. Checked against a plain NumPy cross entropy."""

import jax
import jax.numpy as jnp
import numpy as np

from lab.data.streams import MemberStreams
from lab.model import ModelConfig, init
from lab.train.step import loss_fn, stream_loss


def test_windows_come_from_each_stream_within_its_valid_length():
    task = MemberStreams(seq_len=4, vocab_size=16, n_streams=3)
    data = {f"train{c}": np.full(50, c + 1, np.int32) for c in range(3)}
    data["train2"][20:] = 0  # padding past the valid length
    data["train2_len"] = np.asarray(20, np.int32)
    data["val"] = np.arange(40, dtype=np.int32) % 16
    task.check_data(data)
    b = jax.jit(task.sample, static_argnums=(1, 3))(data, "train", jax.random.PRNGKey(0), 64)
    assert b["inputs"].shape == (3, 64, 4) and b["targets"].shape == (3, 64, 4)
    for c in range(3):
        assert (np.asarray(b["inputs"][c]) == c + 1).all() and (np.asarray(b["targets"][c]) == c + 1).all()
    v = jax.jit(task.sample, static_argnums=(1, 3))(data, "val", jax.random.PRNGKey(1), 8)
    assert v["inputs"].shape == (8, 4)
    assert (np.asarray(v["targets"]) == (np.asarray(v["inputs"]) + 1) % 16).all()


def test_stream_loss_is_the_cross_entropy_on_the_members_stream():
    cfg = ModelConfig(vocab_size=16, max_len=4, n_layers=1, d_model=8, n_heads=2)
    params = init(cfg, jax.random.PRNGKey(0))
    task = MemberStreams(seq_len=4, vocab_size=16, n_streams=2)
    rng = np.random.default_rng(0)
    data = {"train0": rng.integers(0, 16, 60), "train1": rng.integers(0, 16, 60)}
    batch = jax.jit(task.sample, static_argnums=(1, 3))(data, "train", jax.random.PRNGKey(3), 5)
    picked = jax.jit(stream_loss, static_argnums=1)
    logits_of = jax.jit(lambda p, b: loss_fn(p, cfg, b)[1])
    for c in range(2):
        got, _ = picked(params, cfg, batch, jnp.asarray([float(c)]))
        logits = np.asarray(logits_of(params, {k: v[c] for k, v in batch.items()}), np.float64)
        y = np.asarray(batch["targets"][c])
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        logp -= logits.max(-1, keepdims=True)
        want = -np.take_along_axis(logp, y[..., None], -1).mean()
        assert abs(float(got) - want) < 1e-5
