"""random_subset and csr, the two comparators that are not a map before the prefix cut: a
random subset keeps exactly d of the model's coordinates (nested in a draw, other coordinates
for another seed); a CSR code keeps at most k latents, its loss equals sentence-transformers'
CSR objective (with and without dead latents) and falls on a small synthetic task, and the
auxiliary term reaches the dead latents; eval.py writes both to results.json (every draw, the
bytes per code), and bad input is one line, exit 2."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from mrl.artifacts.pairs import load_pairs
from mrl.artifacts.results import load_results
from mrl.evaluation.csr import (
    DEAD_STEPS,
    SparseCoder,
    code_bytes,
    csr_loss,
    load_coders,
    new_coder,
    top_k,
    train_coder,
)
from mrl.evaluation.posthoc import PostHoc
from mrl.evaluation.transforms import random_orders
from tests.evaluation.test_evaluate import each_refused, evaluate


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def test_a_random_subset_keeps_exactly_d_coordinates_and_differs_per_seed():
    width, dims = 24, [24, 12, 5, 1]
    orders = random_orders(width, 3, seed=7)
    assert orders.shape == (3, width)
    assert all(sorted(o.tolist()) == list(range(width)) for o in orders)  # each a permutation
    assert torch.equal(random_orders(width, 2, seed=7), orders[:2])  # more draws, same first ones
    assert not torch.equal(random_orders(width, 3, seed=8), orders)  # another seed, other draws
    assert len({tuple(o[:5].tolist()) for o in orders}) == 3  # the draws differ
    left, right = torch.randn(2, 40, width, generator=torch.Generator().manual_seed(0))
    post = PostHoc("random_subset", orders=orders)
    draws = post.pair_draws(left, right, dims)
    assert len(draws) == 3 and post.per_dim
    for i, (order, sims) in enumerate(zip(orders, draws, strict=True)):
        for d in dims:
            keep = order[:d]
            assert len(set(keep.tolist())) == d
            dropped = torch.ones(width, dtype=torch.bool)
            dropped[keep] = False  # the other coordinates change nothing
            noisy = left.clone()
            noisy[:, dropped] = torch.randn(40, width - d)
            want = (unit(left[:, keep]) * unit(right[:, keep])).sum(-1).numpy()
            again = post.pair_draws(noisy, right, [d])[i][d]
            assert sims[d] == pytest.approx(want, abs=1e-6)
            assert again == pytest.approx(want, abs=1e-6)
    assert draws[0][width] == pytest.approx(draws[1][width], abs=1e-6)  # all of them: the model


def test_a_csr_code_keeps_at_most_k_latents_and_is_counted_in_bytes():
    coder = new_coder(16, 64, seed=0)
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(0))
    for k in (1, 4, 64):
        codes = coder.codes(x, k)
        assert codes.shape == (50, 64) and ((codes != 0).sum(1) <= k).all()
        assert (codes >= 0).all()
        pre = coder.pre_activations(x).detach()
        kept = codes != 0  # the kept values are pre-activations among each row's k largest
        assert torch.equal(codes[kept], pre[kept])
        largest = torch.zeros_like(kept).scatter(1, pre.topk(k, dim=1).indices, True)
        assert not (kept & ~largest).any() and (kept == (largest & (pre > 0))).all()
    assert (coder.codes(x, 64) == F.relu(coder.pre_activations(x)).detach()).all()
    assert code_bytes(32, 1536) == 32 * 6 and code_bytes(32, 70000) == 32 * 8


def test_the_csr_loss_is_the_csr_objective_of_sentence_transformers():
    """Our loss equals sentence-transformers' CSRLoss on the same tied weights: its
    reconstruction at k and 4k, its auxiliary term (0 with no dead latents, then with the same
    dead latents), plus its default contrastive loss (dot product of codes, scale 1, in-batch
    and hard negatives)."""
    from sentence_transformers.sparse_encoder.losses.csr import CSRReconstructionLoss
    from sentence_transformers.sparse_encoder.modules.sparse_auto_encoder import (
        SparseAutoEncoder,
    )

    width, latent, k = 12, 48, 4
    coder = new_coder(width, latent, seed=3)
    with torch.no_grad():
        coder.pre_bias.normal_(0, 0.1)
        coder.latent_bias.normal_(0, 0.1)
    theirs = SparseAutoEncoder(width, latent, k=k, k_aux=0)
    theirs.load_state_dict(
        {"pre_bias": coder.pre_bias, "encoder.weight": coder.weight,
         "latent_bias": coder.latent_bias, "stats_last_nonzero": torch.zeros(latent).long()},
        strict=False,
    )  # fmt: skip
    columns = list(torch.randn(3, 10, width, generator=torch.Generator().manual_seed(1)))
    theirs.train()
    outputs = [theirs({"sentence_embedding": c}) for c in columns]
    pieces = CSRReconstructionLoss(model=None).compute_loss_from_embeddings(outputs)
    codes = [o["sentence_embedding"] for o in outputs]
    logits = codes[0] @ torch.cat(codes[1:]).T
    want = sum(pieces.values()) + F.cross_entropy(logits, torch.arange(10))
    ours = csr_loss(coder, columns, k, track=False)
    assert ours.item() == pytest.approx(want.item(), rel=1e-5)

    # dead latents (in no top 4k of this batch): the auxiliary terms agree too
    columns, k = [c[:2] for c in columns], 1
    pre = torch.cat([coder.pre_activations(c) for c in columns]).detach()
    dead = torch.ones(latent, dtype=torch.bool)
    dead[pre.topk(4 * k, dim=1).indices.flatten()] = False
    assert 0 < dead.sum() < latent
    with_aux = SparseAutoEncoder(width, latent, k=k, k_aux=latent)  # ours: min(512, dead)
    with_aux.load_state_dict(theirs.state_dict(), strict=False)
    with_aux.stats_last_nonzero.copy_(dead.long() * 100)
    with_aux.train()
    outputs = [with_aux({"sentence_embedding": c}) for c in columns]
    pieces = CSRReconstructionLoss(model=None, beta=0.1).compute_loss_from_embeddings(outputs)
    assert pieces["reconstruction_loss_aux"] > 0
    codes = [o["sentence_embedding"] for o in outputs]
    logits = codes[0] @ torch.cat(codes[1:]).T
    want = sum(pieces.values()) + F.cross_entropy(logits, torch.arange(2))
    coder.idle_steps.copy_(dead.long() * DEAD_STEPS)
    ours = csr_loss(coder, columns, k, track=False)
    assert ours.item() == pytest.approx(want.item(), rel=1e-5)


def test_the_auxiliary_term_reaches_dead_latents_only_when_they_are_dead():
    coder = new_coder(8, 64, seed=0)
    columns = list(torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0)))
    k = 1

    def grad_rows() -> torch.Tensor:
        coder.zero_grad()
        csr_loss(coder, columns, k, track=False).backward()
        return coder.weight.grad.abs().sum(1) > 0

    pre = torch.cat([coder.pre_activations(c) for c in columns]).detach()
    used = torch.zeros(64, dtype=torch.bool)
    used[pre.topk(4 * k, dim=1).indices.flatten()] = True  # in some row's top 4k
    assert not used.all()
    assert not grad_rows()[~used].any()  # no dead latents: the unused ones get no gradient
    coder.idle_steps[~used] = DEAD_STEPS
    assert grad_rows()[~used].any()  # dead: the auxiliary term trains them


def test_the_csr_loss_falls_on_a_small_synthetic_task():
    """Embeddings that are sparse mixtures of 40 atoms; positives are noisy copies."""
    g = torch.Generator().manual_seed(0)
    atoms = unit(torch.randn(40, 16, generator=g))
    weights = torch.rand(256, 40, generator=g) * (torch.rand(256, 40, generator=g) < 0.1)
    anchors = unit(weights @ atoms + 0.01 * torch.randn(256, 16, generator=g))
    positives = unit(anchors + 0.05 * torch.randn(256, 16, generator=g))
    coder = new_coder(16, 64, seed=0)
    history = train_coder(coder, [anchors, positives], 4, 30, 0.003, 32, 0, progress=False)
    assert len(history) == 30 and history[-1] < 0.7 * history[0], history
    codes_a, codes_p = coder.codes(anchors, 4), coder.codes(positives, 4)
    match = (unit(codes_a) @ unit(codes_p).T).argmax(1) == torch.arange(256)
    assert match.float().mean() > 0.5  # a 4-latent code finds its own positive among 256


def test_eval_random_subset_writes_the_mean_and_every_draw(data_dir, tiny_model, tmp_path):
    run_dir = tmp_path / "subset"
    overrides = [f"model={tiny_model}", "benchmarks=stsb", "transform=random_subset",
                 "transform_fit.draws=3", "dims=[32,8,2]"]  # fmt: skip
    evaluate(overrides, run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    post = results["posthoc"]
    assert post["transform"] == "random_subset" and post["draws"] == 3 and post["nested"]
    assert post["bytes_per_embedding"] == {"32": 128, "8": 32, "2": 8}
    per_draw = post["per_draw"]["stsb"]
    from safetensors.torch import load_file

    saved = load_file(str(run_dir / "random_subset.safetensors"))["orders"]
    assert torch.equal(saved, random_orders(32, 3, 0))
    for dim in ("32", "8", "2"):
        assert results["test"][dim] == pytest.approx(np.mean(per_draw[dim]), abs=1e-9)
        for i in range(3):  # each draw's pairs, stacked as seeds for an interval
            pairs = load_pairs(run_dir / "draws" / str(i) / "test_pairs.npz")
            rho = spearmanr(pairs.sims[int(dim)], pairs.gold).statistic
            assert rho == pytest.approx(per_draw[dim][i], abs=1e-6)
    assert len(set(per_draw["8"])) == 3  # the draws score differently at 8 dims
    assert per_draw["32"][0] == pytest.approx(per_draw["32"][2], abs=1e-6)  # all 32: the model


def test_eval_csr_writes_codes_scores_and_bytes(data_dir, tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    run_dir = tmp_path / "csr"
    overrides = [f"model={tiny_model}", "benchmarks=stsb", "transform=csr", "transform_fit.k=[4,8]",
                 "transform_fit.epochs=2", "transform_fit.latent_mult=2"]  # fmt: skip
    evaluate(overrides, run_dir)
    results = load_results(run_dir)
    post = results.extra["posthoc"]
    assert results.eval_dims == [8, 4] and post["latent"] == 64 and post["k"] == [8, 4]
    assert post["bytes_per_embedding"] == {"8": 48, "4": 24}
    assert [len(v) for v in post["loss_history"].values()] == [2, 2]
    coders = load_coders(run_dir)
    assert list(coders) == [8, 4]
    pairs = load_pairs(run_dir / "test_pairs.npz")
    rows = [json.loads(line) for line in (data_dir / "stsb" / "test.jsonl").read_text().split("\n")
            if line]  # fmt: skip
    model = SentenceTransformer(str(tiny_model), device="cpu")
    left = model.encode([r["sentence1"] for r in rows], convert_to_tensor=True)
    right = model.encode([r["sentence2"] for r in rows], convert_to_tensor=True)
    for k, coder in coders.items():
        a, b = coder.codes(left, k), coder.codes(right, k)
        assert ((a != 0).sum(1) <= k).all()
        assert pairs.sims[k] == pytest.approx((unit(a) * unit(b)).sum(-1).numpy(), abs=1e-5)
        assert results.test[k] == pytest.approx(spearmanr(pairs.sims[k], pairs.gold).statistic)


def test_csr_and_random_subset_score_retrieval_their_own_way(data_dir, tiny_model, tmp_path):
    from omegaconf import OmegaConf
    from sentence_transformers import SentenceTransformer

    from mrl.data.beir import BeirSource, load_beir
    from mrl.evaluation.retrieval import encode_retrieval, retrieval_by_dim
    from tests.conftest import CONF
    from tests.data.test_beir import synthetic_set

    synthetic_set(data_dir / "beir" / "scifact")
    common = [f"model={tiny_model}", "benchmarks=scifact", "dims=[8,4]", "transform_fit.epochs=1"]
    evaluate([*common, "transform=csr"], tmp_path / "csr")
    evaluate([*common, "transform=random_subset", "transform_fit.draws=2"], tmp_path / "sub")
    source = OmegaConf.load(CONF / "evaluate" / "benchmarks" / "scifact.yaml").scifact
    data = load_beir(BeirSource.from_config(source, "scifact"))
    q, d = encode_retrieval(SentenceTransformer(str(tiny_model), device="cpu"), data, 128)
    csr = load_results(tmp_path / "csr").benchmarks
    for k, coder in load_coders(tmp_path / "csr").items():
        codes = [coder.codes(torch.from_numpy(x), k).numpy() for x in (q, d)]
        for metric, by_dim in retrieval_by_dim(*codes, data, [coder.latent]).items():
            assert csr[f"scifact/{metric}"][k] == pytest.approx(by_dim[coder.latent], abs=1e-6)
    sub = load_results(tmp_path / "sub")
    draws = [retrieval_by_dim(q[:, o], d[:, o], data, [8, 4]) for o in random_orders(32, 2, 0)]
    for metric in draws[0]:
        per_draw = sub.extra["posthoc"]["per_draw"][f"scifact/{metric}"]
        for dim in (8, 4):
            assert per_draw[str(dim)] == pytest.approx([s[metric][dim] for s in draws], abs=1e-6)
            assert sub.benchmarks[f"scifact/{metric}"][dim] == pytest.approx(
                np.mean(per_draw[str(dim)]), abs=1e-9
            )
    # the per-query values behind each mean: one file for csr, one per draw for random_subset
    from mrl.evaluation.retrieval import load_query_scores

    saved = load_query_scores(tmp_path / "csr" / "queries" / "scifact.npz")
    for k in load_coders(tmp_path / "csr"):
        assert saved.per_query["ndcg@10"][k].mean() == pytest.approx(csr["scifact/ndcg@10"][k])
    for i, draw in enumerate(draws):
        saved = load_query_scores(tmp_path / "sub" / "draws" / str(i) / "queries" / "scifact.npz")
        for dim in (8, 4):
            assert saved.per_query["ndcg@10"][dim].mean() == pytest.approx(draw["ndcg@10"][dim])


def test_bad_subset_and_csr_input_is_one_line(data_dir, tiny_model, tmp_path, capsys):
    cases = {
        "transform=random_subset dims=[64,8]": "dims holds 64, larger than the backbone's hidden",
        "transform=random_subset transform_fit.draws=0": "transform_fit.draws=0 must be a whole",
        "transform=csr transform_fit.k=[8,0]": "transform_fit.k holds 0; every k must be a whole",
        "transform=csr transform_fit.k=[8,-2]": "transform_fit.k holds -2",
        "transform=csr transform_fit.k=[200]": "transform_fit.k holds 200, larger than the latent "
        "width 128",
        "transform=csr transform_fit.k=8": "transform_fit.k=8 must be a list of k values",
        "transform=csr transform_fit.latent_mult=0": "transform_fit.latent_mult=0 must be a whole",
        "transform=csr transform_fit.export=true": "transform=csr is no single linear map",
        "transform=csr transform_fit.data.hub_split=test": "transform_fit.data is a test split",
    }
    each_refused(cases, [f"model={tiny_model}", "benchmarks=stsb"], tmp_path, capsys)


def test_a_sparse_coder_round_trips_through_its_files(tmp_path):
    from mrl.evaluation.csr import save_coders

    coders = {8: new_coder(6, 24, 0), 2: new_coder(6, 24, 1)}
    coders[8].idle_steps += 3
    save_coders(coders, tmp_path, {"k": [8, 2]})
    loaded = load_coders(tmp_path)
    x = torch.randn(5, 6)
    for k in (8, 2):
        assert torch.equal(loaded[k].codes(x, k), coders[k].codes(x, k))
    assert isinstance(loaded[8], SparseCoder) and json.loads((tmp_path / "csr.json").read_text())
    assert top_k(torch.tensor([[3.0, -1.0, 2.0]]), 2).tolist() == [[3.0, 0.0, 2.0]]
