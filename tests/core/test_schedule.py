import math

import pytest

from mrl.common.errors import ConfigError
from mrl.core.schedule import (
    check_n_dims_per_step,
    dims_from_rule,
    eval_dims,
    resolve_dims,
    resolve_weights,
)


def test_pow2_rule_keeps_the_seed_ratio():
    assert dims_from_rule(768) == [768, 512, 256, 128, 64]
    assert dims_from_rule(384) == [384, 256, 128, 64, 32]
    assert dims_from_rule(32) == [32, 16, 8, 4]
    assert dims_from_rule(1024) == [1024, 512, 256, 128]  # 1024/12 = 85.3 -> min 85


def test_halving_rule():
    assert dims_from_rule(768, "halving", 1 / 16) == [768, 384, 192, 96, 48]


def test_explicit_dims_override_rule_and_are_sorted():
    assert resolve_dims(384, [32, 384, 128]) == [384, 128, 32]


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        ([512, 64], "larger than the backbone's hidden size 384"),
        ([], "is empty"),
        ([128, 128, 64], "repeats [128]"),
        ([128, 0], "positive whole number"),
    ],
)
def test_bad_dims_name_the_field(dims, message):
    with pytest.raises(ConfigError, match="matryoshka.dims") as err:
        resolve_dims(384, dims)
    assert message in str(err.value)


def test_weights_follow_their_dims_when_dims_are_unsorted():
    dims = resolve_dims(384, [32, 384])
    assert resolve_weights(dims, [2.0, 1.0], given_dims=[32, 384]) == [1.0, 2.0]
    assert resolve_weights(dims, None) == [1.0, 1.0]


def test_weights_of_wrong_length_fail():
    with pytest.raises(ConfigError, match="matryoshka.weights has 2 entries but there are 3 dims"):
        resolve_weights([384, 128, 32], [1.0, 1.0])


def test_n_dims_per_step_range():
    check_n_dims_per_step(None, 5)
    check_n_dims_per_step(2, 5)
    with pytest.raises(ConfigError, match="n_dims_per_step=6"):
        check_n_dims_per_step(6, 5)


def test_dense_and_ends_rules():
    assert dims_from_rule(384, "dense") == [384, *range(352, 0, -32)]
    assert dims_from_rule(384, "ends") == [384, 32]
    assert dims_from_rule(32, "dense", 0.25) == [32, 24, 16, 8]


def test_named_weight_schemes_have_mean_one_and_the_right_order():
    dims = [384, 256, 128, 64, 32]
    increasing = resolve_weights(dims, "increasing")
    assert sum(increasing) == pytest.approx(len(dims))
    assert increasing == sorted(increasing) and increasing[-1] > increasing[0]
    raw = [1 + math.log2(384 / d) for d in dims]
    assert increasing == pytest.approx([w * len(dims) / sum(raw) for w in raw])
    assert resolve_weights(dims, "decreasing") == pytest.approx(increasing[::-1])
    assert resolve_weights(dims, "uniform") == [1.0] * 5
    with pytest.raises(ConfigError, match="matryoshka.weights='steep' is unknown"):
        resolve_weights(dims, "steep")


def test_eval_dims_add_the_pow2_dims_to_any_schedule():
    assert eval_dims(384, [384, 32]) == [384, 256, 128, 64, 32]
    assert eval_dims(384, [384, 192, 96, 48]) == [384, 256, 192, 128, 96, 64, 48, 32]


def test_fixed_dim_trains_that_prefix_alone():
    from mrl.core.schedule import fixed_dim_schedule

    group = {"fixed_dim": 8, "enabled": True, "n_dims_per_step": None}
    assert fixed_dim_schedule([32, 16, 8, 4], group, 32) == ([32, 16, 8, 4], [0, 0, 1, 0])
    dims, weights = fixed_dim_schedule([32, 16, 8, 4], {**group, "fixed_dim": 12}, 32)
    assert dims == [32, 16, 12, 8, 4] and weights == [0, 0, 1, 0, 0]  # joins the schedule


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fixed_dim": 64}, "matryoshka.fixed_dim holds 64, larger than the backbone"),
        ({"fixed_dim": [8, 4]}, "must be one dimension"),
        ({"enabled": False}, "matryoshka.enabled=false trains the full width"),
        ({"n_dims_per_step": 2}, "leave it null"),
    ],
)
def test_fixed_dim_bad_combinations_are_one_line(change, message):
    from mrl.core.schedule import fixed_dim_schedule

    group = {"fixed_dim": 8, "enabled": True, "n_dims_per_step": None, **change}
    with pytest.raises(ConfigError, match=message):
        fixed_dim_schedule([32, 16, 8, 4], group, 32)


def test_a_fixed_dim_loss_gives_no_gradient_beyond_its_prefix():
    import torch

    from mrl.core.matryoshka import GlobalBatch, MatryoshkaLoss
    from mrl.core.schedule import fixed_dim_schedule

    group = {"fixed_dim": 8, "enabled": True, "n_dims_per_step": None}
    dims, weights = fixed_dim_schedule([32, 16, 8, 4], group, 32)
    embeddings = torch.randn(3 * 6, 32, generator=torch.Generator().manual_seed(0))
    embeddings.requires_grad_()
    loss, per_dim = MatryoshkaLoss("mnrl", dims, weights)(
        GlobalBatch.from_embeddings(embeddings, 6)
    )
    loss.backward()
    assert set(per_dim) == {32, 16, 8, 4}  # every dim still logged
    assert embeddings.grad[:, 8:].abs().max() == 0  # coordinates past the prefix: no gradient
    assert embeddings.grad[:, :8].abs().max() > 0
