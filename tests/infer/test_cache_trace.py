"""lab.infer.cache_trace: the slot positions recorded during a real greedy decode, and the states read from
them: a full cache computes each K/V row once and reads all earlier ones, a sliding window of W reads the
last W - 1 and has evicted the rest, no cache recomputes every row at every step."""

import jax
import numpy as np
import pytest

from lab.infer.cache_trace import COMPUTED, EVICTED, READ, recompute_states, slot_states, slot_trace
from lab.model import ModelConfig, transformer

# Compiled whole (the config static): run eagerly, a model executes op by op and compiles each op on first
# use, which costs several times one compilation of the whole program.
init = jax.jit(transformer.init, static_argnums=0)

P, STEPS, W = 5, 10, 4


@pytest.fixture(scope="module")
def traces():
    cfg = ModelConfig(vocab_size=11, max_len=P + STEPS, n_layers=1, d_model=8, n_heads=2)
    params = init(cfg, jax.random.PRNGKey(0))
    prompt = np.arange(P, dtype=np.int32)
    return slot_trace(cfg, params, prompt, STEPS), slot_trace(cfg, params, prompt, STEPS, window=W)


def test_full_and_sliding_caches_as_recorded(traces):
    full, ring = traces
    last = P + STEPS - 2  # the position of the last token fed
    assert [s["query"] for s in full] == [list(range(P))] + [[P + i] for i in range(STEPS - 1)]
    assert sorted(p for p in full[-1]["after"] if p >= 0) == list(range(last + 1))
    assert sorted(ring[-1]["after"]) == list(range(last - W + 1, last + 1)) and len(ring[-1]["after"]) == W
    g = slot_states(full, P + STEPS, None)
    assert (g == COMPUTED).sum() == P + STEPS - 1 and np.all((g[1:] == COMPUTED).sum(axis=1) == 1)
    assert (g[-1] == READ).sum() == last and not (g == EVICTED).any()
    s = slot_states(ring, P + STEPS, W)
    assert (s[-1] == READ).sum() == W - 1 and (s[-1] == EVICTED).sum() == last - (W - 1)


def test_no_cache_recomputes_every_row_and_a_hidden_cached_row_is_refused():
    g = recompute_states(P, STEPS)
    assert (g == COMPUTED).sum() == P + sum(P + r for r in range(1, STEPS))
    bad = [{"query": [3], "before": [0, 1, 2], "after": [0, 1, 2, 3]}]  # row 0 cached but outside W = 2
    with pytest.raises(ValueError, match="invisible"):
        slot_states(bad, 4, 2)
