"""The recipe for a new sampler filter, followed on a copy of the table: one pure function and one `Knob`
entry, and then `sample`, `sample_trace`, the dashboard's request checks and its page all have it.

The filter here is epsilon sampling (Hewitt et al. 2022): keep the tokens of probability >= epsilon (and
the most probable one), checked against NumPy.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.infer import dashboard as D
from lab.infer.dashboard_page import page
from lab.infer.sampler import sample_trace
from lab.model import PRESETS, init
from lab.ops import sampling as S


def epsilon_filter(logits_BV, eps_B1):  # step 1 of the recipe: the pure function
    probs = jax.nn.softmax(logits_BV, axis=-1)
    keep = (probs >= eps_B1) | (probs == jnp.max(probs, axis=-1, keepdims=True))
    return jnp.where(keep, logits_BV, -jnp.inf)


# step 2: the table entry (neutral value, allowed range, slider range and step, label)
TABLE = S.SAMPLERS + (
    S.Knob("epsilon", epsilon_filter, 0.0, "epsilon (0 = off)", (0.0, 1.0), (0.0, 0.02, 0.001)),
)


def test_the_chain_applies_the_new_filter_last():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 9)) * 2
    _, got = S.process_logits(
        jnp.asarray(logits), S.knobs(TABLE, temperature=0.7, top_k=6, epsilon=0.1), table=TABLE
    )
    x = logits / 0.7
    x = np.where(x >= np.sort(x, -1)[:, -6:-5], x, -np.inf)  # top-k 6
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = np.where((p >= 0.1) | (p == p.max(-1, keepdims=True)), x, -np.inf)
    np.testing.assert_array_equal(np.isfinite(np.asarray(got)), np.isfinite(want))
    assert np.isfinite(want).sum() < np.isfinite(x).sum()  # the filter removed something here
    _, neutral = S.process_logits(jnp.asarray(logits), S.knobs(TABLE, temperature=0.7), table=TABLE)
    _, plain = S.process_logits(jnp.asarray(logits), S.knobs(temperature=0.7))
    np.testing.assert_array_equal(np.asarray(neutral), np.asarray(plain))


def test_generation_and_the_dashboard_follow_the_table():
    cfg = PRESETS["smoke"].replace(vocab_size=256, max_len=16)
    params = init(cfg, jax.random.PRNGKey(0))
    prompt = np.array([list(b"def f(")])
    cut = sample_trace(
        cfg, params, prompt, 6, {"temperature": 1.0, "epsilon": 1 / 256}, max_new=8, table=TABLE
    )
    off = sample_trace(cfg, params, prompt, 6, {"temperature": 1.0}, max_new=8, table=TABLE)
    assert (cut["kept"] < off["kept"]).all()  # tokens less likely than uniform are cut

    html = page(TABLE)
    assert 'id="epsilon" min="0" max="0.02" step="0.001" value="0"' in html and "epsilon (0 = off)" in html
    assert (
        '"min_p","epsilon","seed"' in html and "min-p / epsilon</div>" in html
    )  # the JS list and the legend
    body = json.dumps({"prompt": "x", "epsilon": 0.003}).encode()
    assert D.parse_request(body, 256, 8, TABLE)[1]["epsilon"] == 0.003
    with pytest.raises(D.BadRequest, match=r"epsilon must be a number in \[0, 1\]"):
        D.parse_request(json.dumps({"epsilon": 1.5}).encode(), 256, 8, TABLE)
    with pytest.raises(D.BadRequest, match="unknown field 'epsilon'"):
        D.parse_request(body, 256, 8)  # the lab's own table has no such knob
