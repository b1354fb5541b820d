"""Command-line overrides of frozen-dataclass configs: keys, types, ranges, and JSON round trips."""

import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from experiments import e11_objectives as e11
from lab import config as C
from lab.errors import ConfigError
from lab.model import ModelConfig
from lab.train.config import TrainConfig


@dataclass(frozen=True)
class Inner:
    n: int = 1
    x: float = 0.5
    flag: bool = False
    kind: Literal["a", "b"] = "a"
    opt: int | None = None
    xs: tuple[float, ...] = (1.0, 2.0)

    def __post_init__(self):
        C.check(self.n >= 1, f"inner.n must be >= 1, got {self.n}")


@dataclass(frozen=True)
class Outer:
    inner: Inner = Inner()
    name: str = "z"


def test_override_parses_each_type():
    cfg = C.apply_overrides(
        Outer(),
        [
            "inner.n=3",
            "inner.x=1e-3",
            "inner.flag=true",
            "inner.kind=b",
            "inner.opt=none",
            "inner.xs=1,2.5,3",
            "name=q",
        ],
    )
    assert cfg == Outer(Inner(3, 1e-3, True, "b", None, (1.0, 2.5, 3.0)), "q")
    assert C.apply_overrides(Outer(), ["inner.opt=4"]).inner.opt == 4


@pytest.mark.parametrize(
    "assignment, fragment",
    [
        ("inner.nn=3", "unknown config key 'inner.nn'; allowed keys: inner.n, inner.x"),
        ("nope=1", "unknown config key 'nope'"),
        ("inner.n=three", "must be an integer"),
        ("inner.x=fast", "must be a number"),
        ("inner.flag=maybe", "must be true or false"),
        ("inner.kind=c", "must be one of 'a', 'b'"),
        ("inner.n=0", "inner.n must be >= 1, got 0"),
        ("inner=3", "is a section"),
        ("inner.n", "expects key=value"),
        ("inner.n=99999999999999999999", "is out of range; integers must lie in [-2**31, 2**31)"),
        ("inner.xs=1,,2", "has an empty item"),
        ("inner.xs=1,", "has an empty item"),
    ],
)
def test_bad_overrides_name_the_problem(assignment, fragment):
    with pytest.raises(ConfigError) as e:
        C.apply_overrides(Outer(), [assignment])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_round_trip_through_json_dict():
    cfg = C.apply_overrides(Outer(), ["inner.xs=4,5", "inner.kind=b"])
    assert C.from_dict(Outer, C.to_dict(cfg)) == cfg
    with pytest.raises(ConfigError):
        C.from_dict(Outer, {"bogus": 1})


@dataclass(frozen=True)
class Later:
    inner: Inner = Inner()
    first_seed: int = C.since(3, absent=0)  # added later, with a default the older records were not made with


def test_a_record_older_than_a_field_reads_as_it_was_made():
    old = {"inner": {"n": 2}}  # written before first_seed (and most of Inner's fields) existed
    assert C.from_dict(Later, old) == Later(inner=Inner(n=2), first_seed=0)
    assert C.fill_defaults(old, Later) == C.to_dict(Later(inner=Inner(n=2), first_seed=0))
    assert (
        Later().first_seed == 3 and C.from_dict(Later, C.to_dict(Later())) == Later()
    )  # new records keep theirs
    stored = C.to_dict(e11.PRESET_TABLE["cpu"])
    del stored["first_seed"]  # a run recorded before 769f791 trained seeds 0-2
    assert C.from_dict(e11.E11Config, stored).first_seed == 0


def test_diff_lists_changed_keys():
    a = C.to_dict(Outer())
    b = C.to_dict(C.apply_overrides(Outer(), ["inner.n=2"]))
    assert C.diff(a, b) == ["inner.n: 1 vs 2"]


def test_real_configs_are_hashable_static_args():
    # frozen dataclasses: usable as jax.jit static arguments and as dict keys
    for cfg in (ModelConfig(), TrainConfig()):
        assert hash(cfg) == hash(dataclasses.replace(cfg))
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.__setattr__("steps" if isinstance(cfg, TrainConfig) else "n_layers", 3)


def test_declarative_checks_name_the_key_and_what_is_allowed():
    from dataclasses import dataclass

    from lab.config import check_at_least, check_causal, check_choices, check_distinct
    from lab.model import ModelConfig

    @dataclass(frozen=True)
    class C:
        seeds: int = 3
        lrs: tuple = (1e-3, 1e-2)
        variants: tuple = ("intact", "zero_v")

    check_at_least(C(), 1, "seeds")
    check_distinct(C(), "lrs", "variants")
    check_choices(C(), "variants", ("intact", "zero_v", "swap_qk"), required=("intact",))
    with pytest.raises(ConfigError, match=r"seeds must be >= 1, got 0"):
        check_at_least(C(seeds=0), 1, "seeds")
    with pytest.raises(ConfigError, match=r"lrs must be >= 0.1, got \(0.001, 0.01\)"):
        check_at_least(C(), 0.1, "lrs")
    with pytest.raises(ConfigError, match="lrs has a repeated value"):
        check_distinct(C(lrs=(1.0, 1.0)), "lrs")
    with pytest.raises(ConfigError, match="variants must not be empty"):
        check_distinct(C(variants=()), "variants")
    with pytest.raises(ConfigError, match=r"variants: unknown \['swap_xy'\]; allowed: intact, zero_v"):
        check_choices(C(variants=("swap_xy",)), "variants", ("intact", "zero_v"))
    with pytest.raises(ConfigError, match="variants must include 'zero_v'"):
        check_choices(C(variants=("intact",)), "variants", ("intact", "zero_v"), required=("zero_v",))
    with pytest.raises(ConfigError, match="model.mask must be 'causal': e99 generates"):
        check_causal(ModelConfig(mask="bidirectional"), "e99 generates")
