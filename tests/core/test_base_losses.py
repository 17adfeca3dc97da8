"""The two base losses added as one function + one registry entry + one yaml each: AnglE and
symmetric MNRL equal sentence-transformers' losses at every prefix, give the single-process
gradient under 2-process DDP and in cached mode; every base loss is float32 under bf16 autocast."""

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.multiprocessing as mp

from mrl.common.errors import ConfigError
from mrl.core.losses import BASE_LOSSES, base_loss
from mrl.core.matryoshka import GlobalBatch, matryoshka_loss
from mrl.encoder.cached import cached_step
from tests.encoder.test_cached import (
    assert_same_gradient,
    gradient_errors,
    grads,
    make_batch,
    make_encoder,
)
from tests.encoder.test_cached import make_scored_pairs as make_pairs_batch
from tests.run.test_ddp import _collate, _encoder, _free_port, _global_batch

DIMS, WEIGHTS = [32, 16, 9, 4], [1.0, 0.5, 2.0, 0.25]  # 9: an odd prefix (AnglE pads it)
NEW_LOSSES = ["angle", "mnrl_symmetric"]
ROWS_FOR = {"angle": "cosent", "mnrl_symmetric": "mnrl"}  # test_ddp's scored pairs / triplets


def _random_columns(seed, n_columns, n_rows=12, width=32):
    g = torch.Generator().manual_seed(seed)
    columns = [torch.randn(n_rows, width, generator=g) for _ in range(n_columns)]
    scores = torch.randint(0, 6, (n_rows,), generator=g).float() / 5  # ties included
    return columns, scores


def _batch(name, columns, scores):
    """The one-process global batch of these text columns (scores only for scored pairs)."""
    local = torch.cat(columns)
    return GlobalBatch.from_embeddings(
        local, len(columns[0]), scores=scores if base_loss(name).scored else None
    )


# ---- equal to sentence-transformers at every prefix ----


def test_angle_equals_sentence_transformers_angle_loss_at_every_prefix():
    pytest.importorskip("sentence_transformers")
    from sentence_transformers.losses import AnglELoss

    (left, right), scores = _random_columns(0, 2)
    theirs = AnglELoss(model=torch.nn.Identity(), scale=20.0)
    total, per_dim = matryoshka_loss("angle", _batch("angle", [left, right], scores), DIMS, WEIGHTS)
    expected = {
        d: theirs.compute_loss_from_embeddings([left[:, :d], right[:, :d]], scores) for d in DIMS
    }
    for d in DIMS:
        assert torch.allclose(per_dim[d], expected[d], atol=1e-5), d
    weighted = sum(w * expected[d] for d, w in zip(DIMS, WEIGHTS, strict=True))
    assert torch.allclose(total, weighted, atol=1e-5)


@pytest.mark.parametrize("n_negatives", [0, 1, 2])
def test_mnrl_symmetric_equals_sentence_transformers_at_every_prefix(n_negatives):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers.losses import MultipleNegativesSymmetricRankingLoss

    columns, _ = _random_columns(1 + n_negatives, 2 + n_negatives)
    theirs = MultipleNegativesSymmetricRankingLoss(model=torch.nn.Identity(), scale=20.0)
    batch = _batch("mnrl_symmetric", columns, None)
    total, per_dim = matryoshka_loss("mnrl_symmetric", batch, DIMS, WEIGHTS)
    expected = {
        d: theirs.compute_loss_from_embeddings([c[:, :d] for c in columns], None) for d in DIMS
    }
    for d in DIMS:
        assert torch.allclose(per_dim[d], expected[d], atol=1e-5), d
    weighted = sum(w * expected[d] for d, w in zip(DIMS, WEIGHTS, strict=True))
    assert torch.allclose(total, weighted, atol=1e-5)


def test_mnrl_symmetric_is_the_mean_of_mnrl_and_its_reverse():
    (anchors, positives), _ = _random_columns(5, 2)
    _, symmetric = matryoshka_loss(
        "mnrl_symmetric", _batch("mnrl", [anchors, positives], None), [8], [1.0]
    )
    _, forward = matryoshka_loss("mnrl", _batch("mnrl", [anchors, positives], None), [8], [1.0])
    _, backward = matryoshka_loss("mnrl", _batch("mnrl", [positives, anchors], None), [8], [1.0])
    assert torch.allclose(symmetric[8], (forward[8] + backward[8]) / 2, atol=1e-6)


# ---- the registry ----


def test_new_losses_are_declared_with_the_data_they_need():
    angle, symmetric = base_loss("angle"), base_loss("mnrl_symmetric")
    assert (angle.kind, angle.scored, angle.max_text_columns) == ("pairs", True, 2)
    assert (symmetric.kind, symmetric.positive_anchors, symmetric.scored) == (
        "in_batch", True, False,
    )  # fmt: skip
    assert set(NEW_LOSSES) <= set(BASE_LOSSES)


def test_unknown_loss_name_is_one_config_error_line_naming_the_known_ones():
    with pytest.raises(ConfigError) as error:
        base_loss("angel")
    message = str(error.value)
    assert "\n" not in message and "'angel'" in message
    assert all(name in message for name in BASE_LOSSES)


# ---- DDP: 2 gloo processes give the single-process gradient on the global batch ----


def _loss_on(name, embeddings, batch, rank=0, world=1):
    """The module's `loss_on_embeddings`, with torch.distributed in place of Lightning."""
    scores, gathered = batch.get("scores"), None
    if world > 1:
        gathered = torch.stack(dist_nn.all_gather(embeddings))
        if scores is not None:
            parts = [torch.empty_like(scores) for _ in range(world)]
            dist.all_gather(parts, scores)
            scores = torch.cat(parts)
    global_batch = GlobalBatch.from_embeddings(
        embeddings, batch["n_rows"], gathered=gathered, rank=rank, scores=scores
    )
    return matryoshka_loss(name, global_batch, DIMS, WEIGHTS)[0]


def _loss(name, encoder, rows, pad_id, rank=0, world=1):
    batch = _collate(rows, pad_id)
    return _loss_on(name, encoder(batch["input_ids"], batch["attention_mask"]), batch, rank, world)


def _worker(rank, world, port, out, name):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120)
    )
    model = torch.nn.parallel.DistributedDataParallel(_encoder())
    rows, pad_id = _global_batch(ROWS_FOR[name])
    _loss(name, model, rows[rank::world], pad_id, rank, world).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.module.named_parameters()}, out)
    dist.barrier()
    os._exit(0)  # no teardown: it can deadlock at exit (see tests/run/test_ddp.py)


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW_LOSSES)
def test_ddp_gradient_equals_single_process_gradient(tmp_path, name):
    out = tmp_path / "ddp_grads.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out), name), nprocs=2, join=True)
    ddp_grads = torch.load(out, weights_only=True)

    encoder = _encoder()
    rows, pad_id = _global_batch(ROWS_FOR[name])
    _loss(name, encoder, rows[0::2] + rows[1::2], pad_id).backward()  # in the gather's order
    assert_same_gradient(ddp_grads, {n: p.grad for n, p in encoder.named_parameters()})

    # not vacuous: each half on its own (local negatives / local ranking only) differs
    encoder.zero_grad()
    (sum(_loss(name, encoder, half, pad_id) for half in (rows[0::2], rows[1::2])) / 2).backward()
    param_name, param = next(iter(encoder.named_parameters()))
    assert not torch.allclose(ddp_grads[param_name], param.grad, atol=1e-6, rtol=1e-4)
    assert (
        max(gradient_errors(ddp_grads, {n: p.grad for n, p in encoder.named_parameters()}).values())
        > 1e-3
    )


# ---- cached (GradCache) mode gives the plain gradient ----


@pytest.mark.parametrize("name", NEW_LOSSES)
@pytest.mark.parametrize("weights", [WEIGHTS, [0.0, 1.0, 0.0, 2.0]])
@pytest.mark.parametrize("mini_batch_size", [1, 4, 7, 30])
def test_cached_gradient_equals_plain_gradient(name, weights, mini_batch_size):
    batch = make_pairs_batch() if base_loss(name).scored else make_batch()

    def loss_fn(embeddings):
        global_batch = GlobalBatch.from_embeddings(
            embeddings, batch["n_rows"], scores=batch.get("scores")
        )
        return matryoshka_loss(name, global_batch, DIMS, weights)

    plain = make_encoder().eval()  # dropout off: the plain pass is one forward
    loss, _ = loss_fn(plain(batch["input_ids"], batch["attention_mask"]))
    loss.backward()
    cached = make_encoder().eval()
    cached_loss, per_dim = cached_step(
        cached, batch["input_ids"], batch["attention_mask"], mini_batch_size, loss_fn
    )
    assert torch.allclose(cached_loss, loss.detach(), atol=1e-6)
    assert set(per_dim) == set(DIMS)
    assert_same_gradient(grads(cached), grads(plain))


# ---- bf16 autocast: every base loss is computed in float32 ----


@pytest.mark.parametrize("name", ["mnrl", "mnrl_symmetric", "cosent", "angle"])
def test_every_base_loss_is_float32_under_bf16_autocast(name):
    columns, scores = _random_columns(7, 2 if base_loss(name).scored else 3)
    batch = _batch(name, columns, scores)
    total, per_dim = matryoshka_loss(name, batch, DIMS, WEIGHTS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total_bf16, per_dim_bf16 = matryoshka_loss(name, batch, DIMS, WEIGHTS)
    assert torch.allclose(total_bf16, total, atol=1e-6, rtol=0)
    for d in DIMS:
        assert torch.allclose(per_dim_bf16[d], per_dim[d], atol=1e-6, rtol=0), d

    # embeddings that arrive in bf16 (a bf16 encoder) still give a float32 loss
    rounded = [c.bfloat16() for c in columns]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total_of_bf16, per_dim_of_bf16 = matryoshka_loss(
            name, _batch(name, rounded, scores), DIMS, WEIGHTS
        )
    assert total_of_bf16.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in per_dim_of_bf16.values())
    expected, _ = matryoshka_loss(
        name, _batch(name, [c.float() for c in rounded], scores), DIMS, WEIGHTS
    )
    assert torch.allclose(total_of_bf16, expected, atol=1e-6, rtol=0)
