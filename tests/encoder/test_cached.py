"""Cached (GradCache) mode gives the plain mode's gradient, at several dims and with a random
subset of dims per step, for MNRL and CoSENT, and replays dropout exactly."""

import pytest
import torch

from mrl.core.batch import collate_texts
from mrl.core.matryoshka import matryoshka_cosent_loss, matryoshka_mnrl_loss
from mrl.encoder.backbone import TINY_BACKBONE, tiny_tokenizer
from mrl.encoder.cached import cached_step
from mrl.encoder.encoder import Encoder

COLUMNS = ["anchor", "positive", "negative"]


def make_batch(n_rows=10):
    tok = tiny_tokenizer()
    rows = []
    for i in range(n_rows):
        texts = {
            "anchor": f"a question number {i} " + "long " * (i % 4),
            "positive": f"answer {i}",
            "negative": f"something else {i * 7}",
        }
        rows.append({f"{k}_ids": tok(v)["input_ids"] for k, v in texts.items()})
    return collate_texts(rows, COLUMNS, tok.pad_token_id)


def make_encoder():
    torch.manual_seed(0)
    return Encoder(TINY_BACKBONE, chunk_size=None)


def loss_fn(dims, weights, n_rows):
    def fn(embeddings):
        return matryoshka_mnrl_loss(embeddings[:n_rows], embeddings[n_rows:], dims, weights)

    return fn


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def gradient_errors(got: dict, expected: dict) -> dict[str, float]:
    """Each tensor's distance between two gradients as a fraction of the whole expected
    gradient's norm: some entries are zero in exact arithmetic (e.g. key biases)."""
    total = torch.sqrt(sum(g.square().sum() for g in expected.values()))
    assert total > 0
    return {name: float((got[name] - grad).norm() / total) for name, grad in expected.items()}


def assert_same_gradient(got: dict, expected: dict) -> None:
    """Equal up to float32 rounding (padding and batching reorder the sums)."""
    for name, error in gradient_errors(got, expected).items():
        assert error < 1e-5, f"{name}: error {error:.2e} of the gradient norm"


@pytest.mark.parametrize(
    ("dims", "weights"),
    [
        ([32], [1.0]),
        ([32, 16, 8, 4], [1.0, 1.0, 1.0, 1.0]),
        ([32, 16, 8, 4], [1.0, 0.0, 2.0, 0.0]),  # n_dims_per_step=2 picks weights like this
        ([16, 4], [0.5, 3.0]),
    ],
)
@pytest.mark.parametrize("mini_batch_size", [1, 4, 7, 30])
def test_cached_gradient_equals_plain_gradient(dims, weights, mini_batch_size):
    batch = make_batch()
    n = batch["n_rows"]
    plain = make_encoder().eval()  # dropout off: the plain pass is one forward
    loss, _ = loss_fn(dims, weights, n)(plain(batch["input_ids"], batch["attention_mask"]))
    loss.backward()

    cached = make_encoder().eval()
    cached_loss, per_dim = cached_step(
        cached, batch["input_ids"], batch["attention_mask"], mini_batch_size,
        loss_fn(dims, weights, n),
    )  # fmt: skip
    assert torch.allclose(cached_loss, loss.detach(), atol=1e-6)
    assert set(per_dim) == set(dims)
    assert_same_gradient(grads(cached), grads(plain))


def test_cached_mode_replays_dropout_masks():
    """With dropout on, the re-encoded mini-batches must equal the cached embeddings."""
    batch = make_batch()
    encoder = make_encoder().train()
    seen = []

    def recording_encoder(ids, mask):
        out = encoder(ids, mask)
        seen.append(out.detach().clone())
        return out

    torch.manual_seed(1)
    cached_step(
        recording_encoder, batch["input_ids"], batch["attention_mask"], 8,
        loss_fn([32, 8], [1.0, 1.0], batch["n_rows"]),
    )  # fmt: skip
    first, second = seen[: len(seen) // 2], seen[len(seen) // 2 :]
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    # and dropout is really active: another pass without the replay differs
    assert not torch.equal(encoder(batch["input_ids"][:8], batch["attention_mask"][:8]), first[0])


def make_scored_pairs(n_rows=9):
    tok = tiny_tokenizer()
    rows = [
        {
            "sentence1_ids": tok(f"a sentence {i} " + "long " * (i % 3))["input_ids"],
            "sentence2_ids": tok(f"another one {i * 3}")["input_ids"],
            "score": (i * 7 % 5) / 5,
        }
        for i in range(n_rows)
    ]
    return collate_texts(rows, ["sentence1", "sentence2"], tok.pad_token_id)


@pytest.mark.parametrize(
    ("dims", "weights"),
    [([32, 16, 8, 4], [1.0, 1.0, 1.0, 1.0]), ([32, 16, 8, 4], [0.0, 1.0, 0.0, 2.0])],
)
@pytest.mark.parametrize("mini_batch_size", [1, 5])
def test_cached_cosent_gradient_equals_plain_gradient(dims, weights, mini_batch_size):
    batch = make_scored_pairs()
    n, scores = batch["n_rows"], batch["scores"]

    def cosent(embeddings):
        return matryoshka_cosent_loss(embeddings[:n], embeddings[n:], scores, dims, weights)

    plain = make_encoder().eval()
    loss, _ = cosent(plain(batch["input_ids"], batch["attention_mask"]))
    loss.backward()
    cached = make_encoder().eval()
    cached_loss, _ = cached_step(
        cached, batch["input_ids"], batch["attention_mask"], mini_batch_size, cosent
    )
    assert torch.allclose(cached_loss, loss.detach(), atol=1e-6)
    assert_same_gradient(grads(cached), grads(plain))
