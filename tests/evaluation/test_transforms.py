"""Post-hoc maps: PCA recovers known principal axes (in order, with a fixed sign); a random
rotation is orthogonal and keeps full-width cosines; the Matryoshka adaptor starts as the
identity, its loss falls, and on embeddings whose information is spread evenly over all dims
its 8-dim prefix beats the raw one (and PCA's); linear maps export as a stock Dense module
that `SentenceTransformer(folder)` loads to the same embeddings (1e-5)."""

import random

import pytest
import torch
import torch.nn.functional as F

from mrl.common.errors import ConfigError
from mrl.evaluation.adaptor import Adaptor, load_adaptor, new_adaptor, save_adaptor, train_adaptor
from mrl.evaluation.posthoc import PostHoc, export_posthoc
from mrl.evaluation.transforms import (
    LinearMap,
    export_dense,
    fit_pca,
    load_linear,
    pca_map,
    random_rotation,
    rotation_map,
    save_linear,
)
from tests.conftest import SHARED, _sentence, needs_shared


def orthogonal(width: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(width, width, generator=torch.Generator().manual_seed(seed)))
    return q


def test_pca_recovers_known_axes_in_order_with_a_fixed_sign():
    width, n = 16, 20000
    axes = orthogonal(width, 0).T  # rows: the true principal axes
    std = torch.linspace(4.0, 0.5, width)  # distinct variances, largest first
    z = torch.randn(n, width, generator=torch.Generator().manual_seed(1)) * std
    mean = torch.arange(width, dtype=torch.float32)
    x = z @ axes + mean
    fitted_mean, components = fit_pca(x)
    assert torch.allclose(fitted_mean, mean, atol=0.1)
    assert torch.allclose(components @ components.T, torch.eye(width), atol=1e-5)
    alignment = (components * axes).sum(1).abs()  # |cos| of each fitted axis with the true one
    assert alignment.min() > 0.99, alignment
    largest = components.abs().argmax(1)
    assert (components[torch.arange(width), largest] > 0).all()  # the sign rule
    again = fit_pca(x[torch.randperm(n)])[1]  # any row order: the same axes, the same signs
    assert torch.allclose(again, components, atol=1e-4)
    mapped = pca_map(x)(x)  # centred, then on the axes: variances in decreasing order
    assert torch.allclose(mapped.mean(0), torch.zeros(width), atol=1e-3)
    assert (mapped.var(0)[:-1] > mapped.var(0)[1:]).all()


def test_pca_refuses_fewer_samples_than_dims():
    with pytest.raises(
        ConfigError, match="PCA needs at least 32 training embeddings to fit 32 axes"
    ):
        fit_pca(torch.randn(31, 32))
    assert fit_pca(torch.randn(32, 32))[1].shape == (32, 32)


def test_random_rotation_is_orthogonal_seeded_and_keeps_full_width_cosine():
    r = random_rotation(24, seed=3)
    assert torch.allclose(r @ r.T, torch.eye(24), atol=1e-5)
    assert torch.equal(r, random_rotation(24, seed=3)) and not torch.equal(
        r, random_rotation(24, 4)
    )
    a, b = torch.randn(50, 24), torch.randn(50, 24)
    rotate = rotation_map(24, seed=3)
    before, after = F.cosine_similarity(a, b), F.cosine_similarity(rotate(a), rotate(b))
    assert torch.allclose(before, after, atol=1e-5)
    assert not torch.allclose(F.cosine_similarity(a[:, :4], b[:, :4]),
                              F.cosine_similarity(rotate(a)[:, :4], rotate(b)[:, :4]))  # fmt: skip


def test_a_linear_map_is_its_dense_layer_and_saves_as_safetensors(tmp_path):
    linear = pca_map(torch.randn(100, 8) * torch.arange(1, 9) + 3)
    x = torch.randn(5, 8)
    weight, bias = linear.weight_bias()
    assert torch.allclose(linear(x), x @ weight.T + bias, atol=1e-5)
    save_linear(linear, tmp_path / "pca.safetensors", {"texts": 100})
    loaded = load_linear(tmp_path / "pca.safetensors")
    assert loaded.kind == "pca" and torch.equal(loaded(x), linear(x))


@pytest.mark.parametrize("kind", ["linear", "residual_mlp"])
def test_an_adaptor_starts_as_the_identity(kind):
    x = torch.randn(10, 12)
    assert torch.allclose(new_adaptor(12, kind, seed=0).apply_frozen(x), x)


def _spread_task(n: int, seed: int, width: int = 32, signal: int = 8):
    """Anchor/positive pairs that share `signal` latent coordinates and have independent
    nuisance in the other width - signal, all of the same variance, then rotated at random:
    every dim holds the same mix, so a raw prefix keeps only a random share of the signal."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, signal, generator=g)

    def side():
        noise = 0.1 * torch.randn(n, signal, generator=g)
        return torch.cat([shared + noise, torch.randn(n, width - signal, generator=g)], 1)

    rotation = orthogonal(width, 7)
    return side() @ rotation.T, side() @ rotation.T


def _top1(anchors: torch.Tensor, positives: torch.Tensor, dim: int) -> float:
    sims = F.normalize(anchors[:, :dim], dim=-1) @ F.normalize(positives[:, :dim], dim=-1).T
    return (sims.argmax(1) == torch.arange(len(anchors))).float().mean().item()


def test_the_adaptor_learns_a_small_prefix_that_beats_the_raw_one_and_pca():
    anchors, positives = _spread_task(3000, seed=0)
    test_a, test_p = _spread_task(500, seed=1)
    dims = [32, 16, 8, 4]
    adaptor = new_adaptor(32, "linear", seed=0)
    history = train_adaptor(adaptor, [anchors, positives], dims, 15, 1e-2, 128, 0, progress=False)
    assert len(history) == 15 and history[-1] < 0.7 * history[0], history
    raw = _top1(test_a, test_p, 8)
    adapted = _top1(adaptor.apply_frozen(test_a), adaptor.apply_frozen(test_p), 8)
    pca = pca_map(torch.cat([anchors, positives]))
    by_variance = _top1(pca(test_a), pca(test_p), 8)  # equal variances: PCA cannot find it
    assert adapted > raw + 0.3 and adapted > by_variance + 0.3, (adapted, raw, by_variance)
    # seeded: the same settings train the same adaptor
    again = new_adaptor(32, "linear", seed=0)
    train_adaptor(again, [anchors, positives], dims, 15, 1e-2, 128, 0, progress=False)
    assert torch.equal(again.linear.weight, adaptor.linear.weight)


def test_an_adaptor_saves_and_loads_as_safetensors(tmp_path):
    adaptor = new_adaptor(16, "residual_mlp", seed=2)
    torch.nn.init.normal_(adaptor.mlp[2].weight)
    save_adaptor(adaptor, tmp_path, {"epochs": 1, "loss_history": [1.0]})
    loaded, info = load_adaptor(tmp_path, width=16)
    x = torch.randn(4, 16)
    assert info["kind"] == "residual_mlp" and info["epochs"] == 1
    assert torch.equal(loaded.apply_frozen(x), adaptor.apply_frozen(x))
    with pytest.raises(ConfigError, match="holds an adaptor of width 16, but this model's"):
        load_adaptor(tmp_path, width=32)
    with pytest.raises(ConfigError, match="holds no adaptor.safetensors and adaptor.json"):
        load_adaptor(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="has no stock sentence-transformers module"):
        PostHoc("adaptor", adaptor=adaptor).weight_bias()


# ---- the export: the model's folder plus a stock Dense module, loaded with no code of ours ----


def _texts(n: int) -> list[str]:
    rng = random.Random(0)
    return [f"{_sentence(rng)} #{i}" for i in range(n)]


def _round_trip(model, post: PostHoc, out, source_name: str, texts: list[str]):
    from sentence_transformers import SentenceTransformer

    export_posthoc(post, model, source_name, [8, 4], out, out.parent / "work")
    ours = post.apply(model.encode(texts, convert_to_tensor=True))
    theirs = SentenceTransformer(str(out), device="cpu")
    assert torch.allclose(theirs.encode(texts, convert_to_tensor=True), ours, atol=1e-5)
    small = SentenceTransformer(str(out), device="cpu", truncate_dim=8)
    assert torch.allclose(small.encode(texts, convert_to_tensor=True), ours[:, :8], atol=1e-5)
    assert "Dense" in (out / "modules.json").read_text()
    assert (out / "mrl.json").read_text() == '{"eval_dims": [8, 4], "schedule_dims": []}'


def test_pca_and_linear_adaptor_exports_load_in_stock_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    from mrl.artifacts.export import export_encoder
    from mrl.encoder.backbone import load_tokenizer
    from mrl.encoder.encoder import Encoder

    torch.manual_seed(0)
    encoder = Encoder("mrl/tiny-random-bert").eval()
    folder = export_encoder(
        encoder, load_tokenizer("mrl/tiny-random-bert"), tmp_path / "tiny", 32, "tiny"
    )
    model = SentenceTransformer(str(folder), device="cpu")
    texts = _texts(40)
    pca = PostHoc("pca", linear=pca_map(model.encode(texts, convert_to_tensor=True)))
    _round_trip(model, pca, tmp_path / "pca", str(folder), texts[:6])
    adaptor = new_adaptor(32, "linear", seed=0)
    torch.nn.init.normal_(adaptor.linear.weight, std=0.3)
    torch.nn.init.normal_(adaptor.linear.bias)
    _round_trip(model, PostHoc("adaptor", adaptor=adaptor), tmp_path / "lin", str(folder), texts)
    # a model without a folder of its own (a Hub id) is saved by sentence-transformers first
    weight, bias = PostHoc("pca", linear=pca.linear).weight_bias()
    export_dense(model, weight, bias, tmp_path / "saved", None, {})
    saved = SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    ours = pca.apply(model.encode(texts, convert_to_tensor=True))
    assert torch.allclose(saved.encode(texts, convert_to_tensor=True), ours, atol=1e-5)
    with pytest.raises(ConfigError, match="already exists"):
        export_dense(model, weight, bias, tmp_path / "saved", None, {})
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@needs_shared
def test_a_pca_export_of_minilm_loads_in_stock_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    source = SHARED / "models" / "all-MiniLM-L6-v2"  # ends in a Normalize module
    model = SentenceTransformer(str(source), device="cpu")
    texts = _texts(400)
    post = PostHoc("pca", linear=pca_map(model.encode(texts, convert_to_tensor=True)))
    _round_trip(model, post, tmp_path / "pca", str(source), texts[:16])


def test_the_linear_map_of_an_empty_batch_is_empty():
    assert LinearMap("rotation", torch.zeros(4), torch.eye(4))(torch.zeros(0, 4)).shape == (0, 4)
    assert Adaptor(4).apply_frozen(torch.zeros(0, 4)).shape == (0, 4)
