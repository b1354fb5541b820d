from lab.model import PRESETS
from lab.model.flops import equal_flops_steps, train_flops_per_step


def test_equal_flops_steps_match_the_reference_budget_to_one_multiple():
    ref = PRESETS["smoke"].replace(vocab_size=256)
    big = ref.replace(vocab_size=4096)
    assert equal_flops_steps(ref, ref, 600, 16, 10) == 600
    steps = equal_flops_steps(big, ref, 600, 16, 10)
    assert steps % 10 == 0 and steps < 600
    budget, per_step = train_flops_per_step(ref, 16) * 600, train_flops_per_step(big, 16)
    assert abs(per_step * steps - budget) <= per_step * 10 / 2
    assert equal_flops_steps(big.replace(vocab_size=10**6), ref, 20, 16, 10) == 10  # at least one multiple


def test_a_forward_pass_is_a_third_of_a_training_step():
    from lab.model.flops import forward_flops_per_token, train_flops_per_token

    cfg = PRESETS["smoke"].replace(vocab_size=256)
    assert 3 * forward_flops_per_token(cfg, 40) == train_flops_per_token(cfg, 40)
