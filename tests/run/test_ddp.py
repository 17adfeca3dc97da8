"""Two CPU processes (gloo): global in-batch negatives (MNRL) and the global ranking of scored
pairs (CoSENT) give the single-process gradient, and distributed evaluation scores the exact
eval set once."""

import datetime
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mrl.core.batch import collate_texts
from mrl.core.losses import pairs_from_global_batch, split_global_batch
from mrl.core.matryoshka import matryoshka_cosent_loss, matryoshka_mnrl_loss
from mrl.encoder.backbone import TINY_BACKBONE, TINY_DECODER, load_tokenizer
from mrl.encoder.cached import cached_step
from mrl.encoder.encoder import Encoder
from tests.conftest import ROOT, make_data_dir
from tests.encoder.test_cached import assert_same_gradient, gradient_errors

DIMS, WEIGHTS = [32, 16, 8], [1.0, 0.5, 2.0]
POOLING = {TINY_BACKBONE: "mean", TINY_DECODER: "last"}  # a BERT, and a decoder as it embeds


COLUMNS = {"mnrl": ["anchor", "positive", "negative"], "cosent": ["sentence1", "sentence2"]}


def _global_batch(loss="mnrl", n_rows=8, backbone=TINY_BACKBONE):
    tok = load_tokenizer(backbone, pooling=POOLING[backbone])
    rows = []
    for i in range(n_rows):
        texts = dict(
            zip(COLUMNS[loss], [f"query {i} about cats", f"cats {i}", f"dogs {i}"], strict=False)
        )
        row = {f"{k}_ids": tok(v)["input_ids"] for k, v in texts.items()}
        if loss == "cosent":
            row["score"] = (i * 3 % 8) / 8
        rows.append(row)
    return rows, tok.pad_token_id


def _encoder(backbone=TINY_BACKBONE):
    torch.manual_seed(0)
    encoder = Encoder(backbone, POOLING[backbone], chunk_size=None)
    encoder.eval()  # no dropout: both sides must compute the same function
    return encoder


def _collate(rows, pad_id):
    return collate_texts(rows, COLUMNS["cosent" if "score" in rows[0] else "mnrl"], pad_id)


def _loss_on(embeddings, batch, rank=0, world=1):
    """The module's `loss_on_embeddings`, with torch.distributed in place of Lightning."""
    n_rows = batch["n_rows"]
    if world > 1:
        gathered = torch.stack(torch.distributed.nn.functional.all_gather(embeddings))
    else:
        gathered = embeddings[None]
    if "scores" in batch:
        scores = batch["scores"]
        if world > 1:
            scores = torch.cat([torch.zeros_like(scores) for _ in range(world)])
            dist.all_gather(list(scores.chunk(world)), batch["scores"])
        left, right = pairs_from_global_batch(gathered, n_rows)
        return matryoshka_cosent_loss(left, right, scores, DIMS, WEIGHTS, 20.0)
    anchors, candidates, offset = split_global_batch(embeddings, gathered, n_rows, rank)
    return matryoshka_mnrl_loss(anchors, candidates, DIMS, WEIGHTS, 20.0, offset)


def _loss(encoder, rows, pad_id, rank=0, world=1):
    batch = _collate(rows, pad_id)
    embeddings = encoder(batch["input_ids"], batch["attention_mask"])
    return _loss_on(embeddings, batch, rank, world)[0]


def _worker(rank, world, port, out, loss, cached, backbone):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a lost peer fails the collective after 2 minutes instead of hanging the test run
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120)
    )
    model = torch.nn.parallel.DistributedDataParallel(_encoder(backbone))
    rows, pad_id = _global_batch(loss, backbone=backbone)
    local = rows[rank::world]  # the sampler's sharding
    if cached:
        batch = _collate(local, pad_id)
        cached_step(
            model, batch["input_ids"], batch["attention_mask"], 3,
            lambda emb: _loss_on(emb, batch, rank, world), no_sync=model.no_sync,
        )  # fmt: skip
    else:
        _loss(model, local, pad_id, rank, world).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.module.named_parameters()}, out)
    dist.barrier()
    # Leave without tearing down: freeing the DDP reducer and gloo group at exit can deadlock
    # (a gloo thread waits for the GIL while the main thread, holding it, joins that thread);
    # it hung a full test run once (2026-11-27). Exit status 0 is all mp.spawn checks.
    os._exit(0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("loss", "cached", "backbone"),
    [("mnrl", False, TINY_BACKBONE), ("mnrl", True, TINY_BACKBONE),
     ("cosent", False, TINY_BACKBONE), ("mnrl", True, TINY_DECODER)],
    ids=["mnrl-plain", "mnrl-cached", "cosent-plain", "mnrl-cached-decoder"],
)  # fmt: skip
def test_ddp_gradient_equals_single_process_gradient_on_the_global_batch(
    tmp_path, loss, cached, backbone
):
    out = tmp_path / "ddp_grads.pt"
    args = (2, _free_port(), str(out), loss, cached, backbone)
    mp.spawn(_worker, args=args, nprocs=2, join=True)
    ddp_grads = torch.load(out, weights_only=True)

    encoder = _encoder(backbone)
    rows, pad_id = _global_batch(loss, backbone=backbone)
    # single process sees the same global batch, ordered as the gather orders it
    ordered = rows[0::2] + rows[1::2]
    _loss(encoder, ordered, pad_id).backward()
    assert_same_gradient(ddp_grads, {n: p.grad for n, p in encoder.named_parameters()})

    # and scale matters: with negatives (or ranked pairs) only from the local half it differs
    encoder.zero_grad()
    (sum(_loss(encoder, half, pad_id) for half in (rows[0::2], rows[1::2])) / 2).backward()
    name, param = next(iter(encoder.named_parameters()))
    assert not torch.allclose(ddp_grads[name], param.grad, atol=1e-6, rtol=1e-4)
    assert (
        max(gradient_errors(ddp_grads, {n: p.grad for n, p in encoder.named_parameters()}).values())
        > 1e-3
    )


@pytest.mark.slow
def test_two_process_ddp_run_scores_the_exact_eval_set_once(tmp_path, run_main, monkeypatch):
    data = make_data_dir(tmp_path / "data", n_triplets=48, n_pairs=41)  # odd: one rank pads
    monkeypatch.setenv("MRL_DATA_DIR", str(data))
    out = tmp_path / "out"
    env = {**os.environ, "MRL_OUTPUT_DIR": str(out)}
    args = ["+exp=allnli_mrl", "model=tiny", "logger=csv", "callbacks.progress_bar=none"]
    ddp = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args, "trainer=ddp",
         "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
         "trainer.max_steps=2", "data.batch_size=8"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    results_files = list(out.rglob("results.json"))
    assert len(results_files) == 1  # one run folder, none from the child process
    ddp_results = json.loads(results_files[0].read_text())
    assert ddp_results["global_step"] == 2

    single_dir = tmp_path / "single"
    run_main([*args, "trainer=cpu", "trainer.max_steps=2", "data.batch_size=8"], single_dir)
    single = json.loads((single_dir / "results.json").read_text())
    # before training both hold the same weights: the distributed score equals the exact one
    assert ddp_results["untrained_test"] == pytest.approx(single["untrained_test"], abs=1e-6)


# One thread per process in every launch below: Lightning otherwise gives each process
# cpus // (processes per node) threads (1 for 2 local processes, 2 for 1 process on each of 2
# "nodes"), and a different thread count sums in a different order, enough to swap two tied
# ranks of the tiny model's Spearman.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
DDP_ARGS = ["+exp=allnli_mrl", "model=tiny", "logger=csv", "callbacks.progress_bar=none",
            "trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true",
            "trainer.max_steps=2", "data.batch_size=8"]  # fmt: skip


def _results(out):
    files = list(out.rglob("results.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text())


@pytest.fixture(scope="module")
def two_local_processes(tmp_path_factory):
    """A tiny data mirror and the results of `train.py` on it with Lightning's 2 CPU processes:
    the run the torchrun and sweep launches below must reproduce."""
    root = tmp_path_factory.mktemp("two_local")
    data = make_data_dir(root / "data", n_triplets=48, n_pairs=41)
    env = {
        **os.environ,
        **ONE_THREAD,
        "MRL_DATA_DIR": str(data),
        "MRL_OUTPUT_DIR": str(root / "out"),
    }
    local = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *DDP_ARGS, "trainer.devices=2"],
        capture_output=True, text=True, cwd=root, env=env, timeout=600,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr[-3000:]
    return data, _results(root / "out")


@pytest.mark.slow
def test_torchrun_two_nodes_train_like_two_local_processes(tmp_path, two_local_processes):
    """`torchrun --nnodes=2` (both "nodes" on localhost, one CPU process each) with
    trainer.num_nodes=2 joins one world of 2 and gives exactly the run that Lightning's own 2
    local processes give, in one run folder."""
    data, two_local = two_local_processes
    port, env = _free_port(), {**os.environ, **ONE_THREAD, "MRL_DATA_DIR": str(data)}
    nodes = []
    for rank in (0, 1):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                   f"--node_rank={rank}", "--nproc_per_node=1", "--master_addr=127.0.0.1",
                   f"--master_port={port}", str(ROOT / "train.py"), *DDP_ARGS,
                   "trainer.devices=1", "trainer.num_nodes=2"]  # fmt: skip
        out = {**env, "MRL_OUTPUT_DIR": str(tmp_path / "tr")}
        with (tmp_path / f"node{rank}.log").open("w") as log:  # a file, not a pipe: never full
            nodes.append(subprocess.Popen(command, cwd=tmp_path, env=out, stdout=log, stderr=log))
    codes = [node.wait(timeout=600) for node in nodes]
    logs = [(tmp_path / f"node{rank}.log").read_text() for rank in (0, 1)]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1]  # the second node joined as rank 1 of 2

    two_nodes = _results(tmp_path / "tr")
    assert two_nodes["global_step"] == two_local["global_step"] == 2
    assert two_nodes["test"] == pytest.approx(two_local["test"], abs=1e-9)
    assert two_nodes["validation"] == pytest.approx(two_local["validation"], abs=1e-9)


@pytest.mark.slow
def test_ddp_jobs_of_a_sweep_start_their_own_workers(tmp_path, two_local_processes):
    """In `train.py -m`, each DDP job starts workers that run that job alone (not the whole
    sweep again), so jobs may differ in world size, and a 2-process job trains exactly like the
    same run outside a sweep; no worker makes a run folder of its own."""
    data, two_local = two_local_processes
    sweep = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", *DDP_ARGS, "trainer.devices=2,1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, **ONE_THREAD, "MRL_DATA_DIR": str(data),
             "MRL_OUTPUT_DIR": str(tmp_path / "sweep")},
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    output = sweep.stdout + sweep.stderr
    assert output.count("Launching 2 jobs") == 1  # the worker did not start the sweep again
    jobs = {p.parent.name: p.parent for p in (tmp_path / "sweep").rglob("results.json")}
    assert len(jobs) == 2 and [p.name for p in (tmp_path / "sweep").iterdir()] == ["sweeps"]
    two = next(folder for name, folder in jobs.items() if "trainer.devices=2" in name)
    one = next(folder for name, folder in jobs.items() if "trainer.devices=1" in name)
    assert (two / "train_ddp_process_1.log").is_file()
    assert not (one / "train_ddp_process_1.log").exists()
    in_sweep = json.loads((two / "results.json").read_text())
    assert in_sweep["test"] == pytest.approx(two_local["test"], abs=1e-9)
