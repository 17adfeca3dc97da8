"""The training objective with 2D Matryoshka layers and the QAT term: cached and DDP gradients
equal the single-process plain gradient, QAT with weight 0 trains bit for bit like plain MRL,
and a 2D run logs and writes its layers x dims grid."""

import datetime
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mrl.core.matryoshka import GlobalBatch, MatryoshkaLoss
from mrl.core.objective import TrainingObjective
from mrl.encoder.cached import cached_step
from tests.conftest import FAST
from tests.encoder.test_cached import assert_same_gradient, grads, make_batch
from tests.run.test_ddp import _free_port

DIMS, WEIGHTS = [32, 16, 8], [1.0, 0.5, 2.0]
TWO_D = {"layers": "all", "layer_weighting": "by_depth", "layer_pairs": "grid",
         "n_layers_per_step": None, "alignment_weight": 0.5,
         "alignment_temperature": 0.3}  # fmt: skip
QAT = {"terms": [{"dim": 16, "precision": "binary"}, {"dim": 8, "precision": "int8"}]}


def _objective(matryoshka=TWO_D, qat=QAT):
    loss = MatryoshkaLoss("mnrl", DIMS, WEIGHTS)
    return TrainingObjective({None: loss}, matryoshka, qat, depth=2, width=32)


def _encoder():
    from mrl.encoder.backbone import TINY_BACKBONE
    from mrl.encoder.encoder import Encoder

    torch.manual_seed(0)
    return Encoder(TINY_BACKBONE, chunk_size=None).eval()


def _loss(objective, embeddings, n_rows, rank=0, world=1, layers=(1, 2)):
    """The module's `loss_on_embeddings`, with torch.distributed in place of Lightning."""
    gathered = None
    if world > 1:
        gathered = torch.stack(torch.distributed.nn.functional.all_gather(embeddings))

    def layer_batch(i):
        every = None if gathered is None else gathered[:, i]
        return GlobalBatch.from_embeddings(embeddings[i], n_rows, every, rank)

    return objective(layer_batch, list(layers), None, WEIGHTS, step=5)


def test_2d_and_qat_parts_are_logged_by_key():
    batch = make_batch(6)
    embeddings = _encoder()(batch["input_ids"], batch["attention_mask"], [1, 2])
    loss, parts = _loss(_objective(), embeddings, batch["n_rows"])
    assert set(parts) == {32, 16, 8, "L1d32", "L1d16", "L1d8", "align@L1", "binary@16", "int8@8"}
    assert torch.isfinite(loss)


@pytest.mark.parametrize("mini_batch_size", [2, 5])
def test_2d_and_qat_cached_gradient_equals_plain_gradient(mini_batch_size):
    batch = make_batch()
    n = batch["n_rows"]
    plain, objective = _encoder(), _objective()
    loss, _ = _loss(objective, plain(batch["input_ids"], batch["attention_mask"], [1, 2]), n)
    loss.backward()
    state = {k: v.clone() for k, v in objective.state_dict().items()}  # calibration after 1 step

    cached, objective = _encoder(), _objective()
    cached_loss, parts = cached_step(
        lambda ids, mask: cached(ids, mask, [1, 2]), batch["input_ids"], batch["attention_mask"],
        mini_batch_size, lambda emb: _loss(objective, emb, n),
    )  # fmt: skip
    torch.testing.assert_close(cached_loss, loss.detach(), atol=1e-6, rtol=1e-6)
    assert "L1d8" in parts and "binary@16" in parts
    assert_same_gradient(grads(cached), grads(plain))
    for key, value in objective.state_dict().items():  # one calibration update per step
        torch.testing.assert_close(value, state[key], atol=1e-6, rtol=0)


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120)
    )
    model = torch.nn.parallel.DistributedDataParallel(_encoder())
    rows = make_batch(8)
    local = _rows_of(rows, rank, world)
    embeddings = model(local["input_ids"], local["attention_mask"], [1, 2])
    _loss(_objective(), embeddings, local["n_rows"], rank, world)[0].backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.module.named_parameters()}, out)
    dist.barrier()
    os._exit(0)  # see tests/run/test_ddp.py: tearing gloo down at exit can deadlock


def _rows_of(batch, rank, world):
    """Rank `rank`'s rows (r, r + world, ...) of a column-stacked batch, still column-stacked."""
    n = batch["n_rows"]
    picked = [c * n + i for c in range(3) for i in range(rank, n, world)]
    return {"input_ids": batch["input_ids"][picked], "n_rows": len(range(rank, n, world)),
            "attention_mask": batch["attention_mask"][picked]}  # fmt: skip


def test_2d_and_qat_ddp_gradient_equals_single_process_gradient(tmp_path):
    out = tmp_path / "grads.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    batch = make_batch(8)
    # one process sees the global batch as the gather orders it: rank 0's rows, then rank 1's
    order = [*range(0, 8, 2), *range(1, 8, 2)]
    picked = [c * 8 + i for c in range(3) for i in order]
    encoder = _encoder()
    embeddings = encoder(batch["input_ids"][picked], batch["attention_mask"][picked], [1, 2])
    _loss(_objective(), embeddings, 8)[0].backward()
    assert_same_gradient(ddp, grads(encoder))


# ---- end to end ----


def _weights(run_dir):
    state = torch.load(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    return {k: v for k, v in state["state_dict"].items() if k.startswith("encoder.")}


def test_qat_with_weight_zero_trains_bit_for_bit_like_plain_mrl(data_dir, run_main, tmp_path):
    common = ["+exp=allnli_mrl", *FAST, "data.max_train_samples=24", "data.batch_size=8"]
    run_main(common, tmp_path / "plain")
    run_main([*common, "qat.terms=[{dim: 16, precision: binary, weight: 0.0}]"], tmp_path / "qat0")
    plain, qat0 = _weights(tmp_path / "plain"), _weights(tmp_path / "qat0")
    assert all(torch.equal(plain[k], qat0[k]) for k in plain)
    results = [json.loads((tmp_path / r / "results.json").read_text()) for r in ("plain", "qat0")]
    assert results[0]["test"] == results[1]["test"]
    # with weight 1 the same run trains differently and writes its calibration, also in the export
    run_main([*common, "qat=binary", "qat.terms=[{dim: 16, precision: binary}]",
              "qat.warmup_steps=0"], tmp_path / "qat1")  # fmt: skip
    assert any(not torch.equal(plain[k], v) for k, v in _weights(tmp_path / "qat1").items())
    calibration = json.loads((tmp_path / "qat1" / "qat_calibration.json").read_text())
    assert len(calibration["threshold"]) == 32
    assert (tmp_path / "qat1" / "sentence-transformers" / "qat_calibration.json").is_file()


def test_a_2d_run_logs_and_writes_its_grid(data_dir, run_main, tmp_path):
    import csv

    run_dir = tmp_path / "run"
    run_main(["+exp=allnli_mrl", *FAST, "data.max_train_samples=16", "data.batch_size=8",
              "matryoshka.layers=all", "matryoshka.alignment_weight=0.1",
              "trainer.log_every_n_steps=1"], run_dir)  # fmt: skip
    results = json.loads((run_dir / "results.json").read_text())
    grid = results["grid"]
    assert set(grid) == {f"L{layer}d{d}" for layer in (1, 2) for d in (32, 16, 8, 4)}
    for d in (32, 16, 8, 4):  # the last layer's row is the model's own test score
        assert grid[f"L2d{d}"] == pytest.approx(results["test"][str(d)], abs=1e-6)
    assert set(results["encode_seconds_by_depth"]) == {"1", "2"}
    assert (run_dir / "grid.png").read_bytes()[:4] == b"\x89PNG"
    header = next(csv.reader((run_dir / "csv" / "metrics.csv").open()))
    for key in ("train/loss@L1d8", "train/loss@align@L1", "val/spearman@L1d8", "train/loss@8"):
        assert key in header, key


def test_listed_pairs_without_layers_are_one_line():
    from mrl.common.errors import ConfigError

    with pytest.raises(ConfigError, match="layer_pairs lists .* but matryoshka.layers is null"):
        _objective({**TWO_D, "layers": None, "layer_pairs": [[1, 8]]}, None)
