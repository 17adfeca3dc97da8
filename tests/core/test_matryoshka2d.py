"""2D Matryoshka: the layer schedule, the one-pass per-layer pooling, and the 2D loss pinned to
the plain Matryoshka loss and to per-pair losses computed one by one."""

import copy
import random

import pytest
import torch

from mrl.common.errors import ConfigError
from mrl.core.layers import layer_dim_pairs, layer_weights, resolve_layers, step_layers
from mrl.core.losses import base_loss
from mrl.core.matryoshka import GlobalBatch, matryoshka_loss
from mrl.core.matryoshka2d import alignment_loss, matryoshka_2d_loss
from mrl.encoder.backbone import TINY_BACKBONE
from mrl.encoder.encoder import Encoder
from tests.encoder.test_encoder import make_texts

# ---- the layer schedule ----


@pytest.mark.parametrize(
    ("spec", "expected"),
    [(None, [6]), ("all", [1, 2, 3, 4, 5, 6]), (2, [2, 4, 6]), (4, [2, 6]), ([1, 3], [1, 3, 6])],
)
def test_layers_resolve_with_the_last_always_in(spec, expected):
    assert resolve_layers(spec, 6) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([7], "holds 7, beyond the backbone's 6 layers; use 1..6"),
        ([0, 3], "holds 0, the embedding output; layers count from 1 to 6"),
        ([], "is empty; give at least one layer"),
        ([2, 2], "repeats a layer"),
        ("some", "must be null, all, a whole number k"),
        (0, "must be >= 1 (every k-th layer)"),
    ],
)
def test_bad_layer_specs_are_one_line(spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_layers(spec, 6)


def test_pairs_weights_and_sampling():
    dims = [32, 16, 8]
    grid = layer_dim_pairs([2, 4, 6], dims, "grid")
    assert sorted(grid) == sorted((layer, d) for layer in (2, 4, 6) for d in dims)
    diagonal = layer_dim_pairs([2, 4, 6], dims, "diagonal")
    assert diagonal == [(6, 32), (6, 16), (6, 8), (2, 8), (4, 32)]
    assert layer_weights([2, 4, 6], 6, "by_depth") == pytest.approx([1 / 3, 2 / 3, 1.0])
    rng = random.Random(0)
    for _ in range(20):
        drawn = step_layers([1, 2, 3, 4, 5, 6], 1, rng)
        assert len(drawn) == 2 and drawn[-1] == 6
    with pytest.raises(ConfigError, match="layer_pairs='band' is unknown"):
        layer_dim_pairs([6], dims, "band")
    assert layer_dim_pairs([2, 6], dims, [[2, 8]]) == [(6, 32), (6, 16), (6, 8), (2, 8)]
    with pytest.raises(ConfigError, match=r"names dim 12, not in the schedule \[32, 16, 8\]"):
        layer_dim_pairs([2, 6], dims, [[2, 12]])
    with pytest.raises(ConfigError, match="names layer 3, not a trained layer"):
        layer_dim_pairs([2, 6], dims, [[3, 8]])
    with pytest.raises(ConfigError, match="n_layers_per_step=-1 must be null or a whole number"):
        step_layers([1, 6], -1, rng)


# ---- one forward pass, every layer ----


def test_pooled_layer_k_equals_a_forward_pass_cut_to_k_layers():
    torch.manual_seed(0)
    encoder = Encoder(TINY_BACKBONE, chunk_size=3).eval()  # chunks too: order restored
    batch = make_texts(7)
    with torch.no_grad():
        per_layer = encoder(**batch, layers=[1, 2])
        full = encoder(**batch)
        cut = copy.deepcopy(encoder)
        cut.backbone.encoder.layer = cut.backbone.encoder.layer[:1]
        cut.backbone.config.num_hidden_layers = 1
        shallow = cut(**batch)
    assert per_layer.shape == (2, 7, 32)
    torch.testing.assert_close(per_layer[1], full, rtol=0, atol=1e-6)
    torch.testing.assert_close(per_layer[0], shallow, rtol=0, atol=1e-6)


# ---- the 2D loss ----


def _batches(layers, n=6, width=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for layer in layers:
        cols = [torch.randn(n, width, generator=generator, requires_grad=True) for _ in range(3)]
        out[layer] = GlobalBatch(cols, cols)
    return out


def test_with_the_last_layer_alone_it_is_the_matryoshka_loss_exactly():
    dims, weights = [32, 16, 8], [1.0, 0.5, 2.0]
    batches = _batches([2])
    total, per_pair = matryoshka_2d_loss(
        "mnrl", batches, layer_dim_pairs([2], dims), dict(zip(dims, weights, strict=True)), {2: 1.0}
    )
    reference, per_dim = matryoshka_loss("mnrl", batches[2], dims, weights)
    assert torch.equal(total, reference)
    assert all(torch.equal(per_pair[(2, d)], per_dim[d]) for d in dims)


@pytest.mark.parametrize("mode", ["grid", "diagonal"])
@pytest.mark.parametrize("loss", ["mnrl", "cosent"])
def test_with_several_layers_it_is_the_weighted_sum_of_pair_losses(mode, loss):
    dims = [32, 16, 8]
    dim_weights = {32: 1.0, 16: 0.5, 8: 2.0}
    layer_w = {1: 0.25, 2: 1.0}
    batches = _batches([1, 2])
    if loss == "cosent":
        scores = torch.rand(6, generator=torch.Generator().manual_seed(1))
        batches = {k: GlobalBatch(b.local[:2], b.world[:2], 0, scores) for k, b in batches.items()}
    pairs = layer_dim_pairs([1, 2], dims, mode)
    total, _ = matryoshka_2d_loss(loss, batches, pairs, dim_weights, layer_w)
    one_by_one = sum(
        layer_w[layer] * dim_weights[d] * matryoshka_loss(loss, batches[layer], [d], [1.0])[0]
        for layer, d in pairs
    )
    torch.testing.assert_close(total, one_by_one, rtol=1e-6, atol=1e-6)


def test_alignment_pulls_the_shallow_layer_only():
    batches = _batches([1, 2])
    term = alignment_loss(base_loss("mnrl"), batches[1], batches[2], 0.3)
    term.backward()
    assert term > 0
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in batches[1].local)
    assert all(t.grad is None for t in batches[2].local)  # the last layer is detached
    # identical layers: nothing to align
    same = _batches([1])[1]
    zero = alignment_loss(base_loss("mnrl"), same, same, 0.3)
    assert zero.abs() < 1e-6


# ---- export at a depth ----


def test_an_export_cut_to_k_layers_gives_layer_k_embeddings_in_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    from mrl.artifacts.export import export_encoder
    from mrl.encoder.backbone import load_tokenizer
    from mrl.encoder.depth import cut_to_depth, encode_seconds_by_depth

    torch.manual_seed(0)
    encoder = Encoder(TINY_BACKBONE).eval()
    tokenizer = load_tokenizer(TINY_BACKBONE)
    folder = export_encoder(cut_to_depth(encoder, 1), tokenizer, tmp_path / "L1", 32, TINY_BACKBONE)
    texts = ["a dog runs in the park", "the cat sleeps", "a child reads at home"]
    model = SentenceTransformer(str(folder), device="cpu")
    assert model[0].auto_model.config.num_hidden_layers == 1
    ours = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        layer_1 = encoder(ours["input_ids"], ours["attention_mask"], layers=[1])[0]
    theirs = torch.as_tensor(model.encode(texts, convert_to_numpy=True))
    torch.testing.assert_close(theirs, layer_1, rtol=0, atol=1e-5)
    cut_model = SentenceTransformer(str(folder), device="cpu", truncate_dim=8)
    torch.testing.assert_close(
        torch.as_tensor(cut_model.encode(texts)), layer_1[:, :8], rtol=0, atol=1e-5
    )
    assert len(list(cut_to_depth(encoder, 1).backbone.encoder.layer)) == 1
    assert len(list(encoder.backbone.encoder.layer)) == 2  # the original is untouched
    with pytest.raises(ConfigError, match=r"--layers 3 must be a whole number in 1..2"):
        cut_to_depth(encoder, 3)
    times = encode_seconds_by_depth(encoder, [dict(ours)], [1, 2])
    assert set(times) == {1, 2} and all(t > 0 for t in times.values())


# ---- the layers x dims grid ----


def test_the_grid_is_spearman_per_layer_and_round_trips_its_keys():
    from mrl.evaluation.grid import flat_grid, grid_png, parse_grid, spearman_grid
    from mrl.evaluation.metrics import spearman_by_dim

    generator = torch.Generator().manual_seed(0)
    left, right = torch.randn(2, 30, 32, generator=generator), torch.randn(2, 30, 32)
    gold = torch.rand(30, generator=generator)
    grid = spearman_grid(left, right, gold, [1, 2], [32, 8])
    assert grid[2] == spearman_by_dim(left[1], right[1], gold, [32, 8])
    assert grid[1] == spearman_by_dim(left[0], right[0], gold, [32, 8])
    assert set(flat_grid(grid)) == {"L1d32", "L1d8", "L2d32", "L2d8"}
    assert parse_grid(flat_grid(grid)) == grid
    assert grid_png(grid, "grid")[:4] == b"\x89PNG"
    assert grid_png(grid, "difference", reference=grid)[:4] == b"\x89PNG"


@pytest.mark.parametrize("projection_dim", [None, 16])
def test_any_models_grid_has_its_own_encode_in_the_last_row(tmp_path, projection_dim):
    import datasets
    from sentence_transformers import SentenceTransformer

    from mrl.artifacts.export import export_encoder
    from mrl.encoder.backbone import load_tokenizer
    from mrl.evaluation.grid import benchmark_grid, layer_embeddings
    from mrl.evaluation.metrics import spearman_by_dim

    torch.manual_seed(0)
    encoder = Encoder(TINY_BACKBONE, projection_dim=projection_dim).eval()
    folder = export_encoder(encoder, load_tokenizer(TINY_BACKBONE), tmp_path / "m", 32,
                            TINY_BACKBONE)  # fmt: skip
    model = SentenceTransformer(str(folder), device="cpu")
    words = ["a dog runs", "the cat sleeps at home", "a child reads", "birds sing", "a man swims"]
    ds = datasets.Dataset.from_dict({
        "sentence1": words * 2, "sentence2": words[1:] + words[:1] + words[2:] + words[:2],
        "score": [0.1, 0.5, 0.9, 0.3, 0.7, 0.2, 0.4, 0.6, 0.8, 1.0],
    })  # fmt: skip
    dims = [encoder.width, 4]
    grid, seconds = benchmark_grid(model, ds, dims, batch_size=4)
    assert sorted(grid) == [1, 2] and sorted(seconds) == [1, 2]
    left, right = (torch.as_tensor(model.encode(list(ds[c]))) for c in ("sentence1", "sentence2"))
    own = spearman_by_dim(left, right, ds["score"], dims)
    assert grid[2] == pytest.approx(own, abs=1e-6)
    # layer 1's row is the export cut to 1 layer, as our encoder pools it
    ours = load_tokenizer(TINY_BACKBONE)(words, padding=True, return_tensors="pt")
    with torch.no_grad():
        layer_1 = encoder(ours["input_ids"], ours["attention_mask"], layers=[1])[0]
    torch.testing.assert_close(layer_embeddings(model, words, [1])[0], layer_1, atol=1e-5, rtol=0)


def test_export_layers_k_of_a_run_loads_in_sentence_transformers(data_dir, run_main, tmp_path):
    from sentence_transformers import SentenceTransformer

    from mrl.artifacts.export import main as export_main
    from mrl.encoder.backbone import load_tokenizer
    from mrl.run.module import MatryoshkaModule
    from tests.conftest import FAST

    run_dir = tmp_path / "run"
    run_main(["+exp=allnli_mrl", *FAST, "data.max_train_samples=16", "data.batch_size=8"], run_dir)
    export_main([str(run_dir), "--layers", "1"])
    folder = run_dir / "sentence-transformers-L1"
    module = MatryoshkaModule.load_from_checkpoint(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    ).eval()
    texts = ["a dog runs in the park", "the cat sleeps"]
    ids = load_tokenizer("mrl/tiny-random-bert")(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        layer_1 = module.encoder(ids["input_ids"], ids["attention_mask"], layers=[1])[0]
    model = SentenceTransformer(str(folder), device="cpu", truncate_dim=8)
    torch.testing.assert_close(
        torch.as_tensor(model.encode(texts)), layer_1[:, :8], atol=1e-5, rtol=0
    )
    assert "the first 1 of the run's 2 layers" in (folder / "README.md").read_text()
