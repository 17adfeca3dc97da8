"""Quantization-aware training (mrl.core.qat): the quantizers match evaluation's, the
straight-through gradients, the running calibration resumes exactly, and bad terms are one line."""

import re

import numpy as np
import pytest
import torch

from mrl.common.errors import ConfigError
from mrl.core.losses import base_loss
from mrl.core.matryoshka import GlobalBatch
from mrl.core.qat import (
    QatTerm,
    RunningCalibration,
    binary_codes,
    check_qat_terms,
    fake_int8,
    parse_qat_terms,
    qat_loss,
)
from mrl.tools.quantization import Calibration


def _sample(n=64, width=16, seed=0):
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed)) * 0.3


def test_int8_and_binary_quantize_as_evaluation_does():
    sample = _sample()
    cal = Calibration(sample.numpy())
    x = _sample(seed=1)
    low, high = torch.as_tensor(cal.low), torch.as_tensor(cal.high)
    ours = fake_int8(x, low, high)
    theirs = cal.int8_dequantized(cal.int8(x.numpy()))
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-6)
    codes = binary_codes(x, torch.as_tensor(cal.median))
    bits = np.unpackbits(cal.binary(x.numpy()), axis=1)[:, :16]
    assert np.array_equal(codes.numpy() > 0, bits.astype(bool))
    # cosine of +-1 codes = 2 * (fraction of equal bits) - 1: the same order as evaluation's
    a, b = codes[:32], codes[32:]
    cosine = torch.nn.functional.cosine_similarity(a, b)
    equal = (np.unpackbits(cal.binary(x[:32].numpy()) ^ cal.binary(x[32:].numpy()), axis=1)[:, :16]
             == 0).mean(1)  # fmt: skip
    np.testing.assert_allclose(cosine.numpy(), 2 * equal - 1, atol=1e-6)


def test_straight_through_gradients():
    x = (torch.linspace(-2, 2, 41)[None, :]).clone().requires_grad_(True)
    threshold = torch.zeros(41)
    upstream = torch.randn(1, 41, generator=torch.Generator().manual_seed(0))
    (binary_codes(x, threshold) * upstream).sum().backward()
    unsaturated = (x.detach() - threshold).abs() < 1
    # the float gradient where the code is not saturated, none where it is
    saturated = (x.detach() - threshold).abs() > 1
    assert torch.equal(x.grad[unsaturated], upstream[unsaturated])
    assert torch.all(x.grad[saturated] == 0)
    y = torch.linspace(-1, 1, 21)[None, :].clone().requires_grad_(True)
    low, high = torch.full((21,), -0.5), torch.full((21,), 0.5)
    (fake_int8(y, low, high) * 2.0).sum().backward()
    inside, outside = y.detach().abs() < 0.5, y.detach().abs() > 0.5
    assert torch.all(y.grad[inside] == 2.0) and torch.all(y.grad[outside] == 0)


def test_running_calibration_resumes_exactly():
    batches = [_sample(seed=s) for s in range(6)]
    straight = RunningCalibration(16, momentum=0.1)
    for b in batches:
        straight.update(b)
    first = RunningCalibration(16, momentum=0.1)
    for b in batches[:3]:
        first.update(b)
    state = {k: v.clone() for k, v in first.state_dict().items()}  # what a checkpoint holds
    resumed = RunningCalibration(16, momentum=0.1)
    resumed.load_state_dict(state)
    for b in batches[3:]:
        resumed.update(b)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert int(resumed.batches) == 6
    # the first batch sets the statistics: its min, max and median
    one = RunningCalibration(16)
    one.update(batches[0])
    assert torch.equal(one.threshold, batches[0].median(0).values)


def test_the_term_trains_the_quantized_prefix_and_weight_zero_computes_nothing():
    cal = RunningCalibration(16)
    cols = [_sample(8, seed=s).requires_grad_(True) for s in range(3)]
    cal.update(torch.cat(cols))
    batch = GlobalBatch(cols, cols)
    mnrl = base_loss("mnrl")
    total, per_term = qat_loss(mnrl, batch, [QatTerm(8, "binary"), QatTerm(16, "int8", 0.5)], cal)
    assert set(per_term) == {"binary@8", "int8@16"}
    torch.testing.assert_close(total, per_term["binary@8"] + 0.5 * per_term["int8@16"])
    total.backward()
    assert cols[0].grad[:, 8:].abs().sum() > 0  # int8@16 reaches the dims past 8
    zero, none = qat_loss(mnrl, batch, [QatTerm(8, "binary", 0.0)], cal)
    assert zero == 0.0 and none == {}


@pytest.mark.parametrize(
    ("term", "message"),
    [
        (QatTerm(32, "int4"), "precision 'int4' does not exist; use int8 or binary"),
        (QatTerm(48, "int8"), "dim 48 is not in the schedule"),
        (QatTerm(12, "binary"), "binary prefix of 12 dims is not a whole number of bytes"),
    ],
)
def test_bad_terms_are_one_line(term, message):
    with pytest.raises(ConfigError, match=message):
        check_qat_terms([term], [64, 32, 12])


def test_terms_are_held_to_the_width_and_the_dims_the_run_trains():
    schedule = [64, 32, 16]
    with pytest.raises(ConfigError, match="dim 128 is beyond the embedding width 64"):
        check_qat_terms([QatTerm(128, "int8")], schedule)
    with pytest.raises(ConfigError, match=r"dim 32 is not trained in this run \(why\), so only"):
        check_qat_terms([QatTerm(32, "binary")], schedule, [64], "why")
    with pytest.raises(ConfigError, match="listed twice"):
        check_qat_terms([QatTerm(32, "int8"), QatTerm(32, "int8", 0.5)], schedule)
    with pytest.raises(ConfigError, match="weight nan must be >= 0"):
        check_qat_terms([QatTerm(32, "int8", float("nan"))], schedule)
    # a weight-0 term computes nothing, so an untrained dim is fine; int8 and binary may share one
    check_qat_terms([QatTerm(32, "binary", 0.0), QatTerm(64, "int8"), QatTerm(64, "binary")],
                    schedule, [64], "why")  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (16, "qat.terms=16 must be a list"),
        ("binary", "qat.terms='binary' must be a list"),
        ([[16, "binary"]], "must be a mapping like {dim: 64, precision: binary"),
        ([{"dim": 16}], "has no precision"),
        ([{"precision": "int8"}], "has no dim"),
        ([{"dim": 16.5, "precision": "int8"}], "dim 16.5 must be a whole number >= 1"),
        ([{"dim": True, "precision": "int8"}], "dim True must be a whole number >= 1"),
        ([{"dim": 16, "precision": "int8", "weight": "1"}], "weight '1' must be a number"),
        ([{"dim": 16, "precision": "int8", "dims": 1}], "'dims' is not a key of a term"),
        ([{"dim": 16, "precsion": "int8"}], "did you mean precision?"),
    ],
)
def test_bad_term_shapes_are_one_line(raw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_qat_terms(raw)


def test_terms_parse_with_a_default_weight():
    raw = [{"dim": 16, "precision": "binary"}, {"dim": 8, "precision": "int8", "weight": 2}]
    assert parse_qat_terms(raw) == [QatTerm(16, "binary", 1.0), QatTerm(8, "int8", 2.0)]
    assert parse_qat_terms(None) == parse_qat_terms([]) == []


# ---- binary shortlist, float rerank ----


def test_binary_shortlist_then_float_rerank():
    from mrl.tools.binary_search import binary_rerank_search, model_thresholds, packed_codes
    from mrl.tools.retrieval import exact_search

    rng = np.random.default_rng(0)
    docs = rng.standard_normal((200, 32)).astype(np.float32)
    queries = (docs[:20] + 0.3 * rng.standard_normal((20, 32))).astype(np.float32)
    median = np.median(docs, axis=0)
    # the codes are evaluation's binary codes (mrl.quantization, threshold = median)
    assert np.array_equal(packed_codes(docs, median), Calibration(docs).binary(docs))
    # a shortlist of the whole corpus reranked at full width is exact search
    assert np.array_equal(binary_rerank_search(queries, docs, 32, 200, median),
                          exact_search(queries, docs))  # fmt: skip
    # the shortlist is the Hamming nearest: reranking a shortlist of 1 returns the code's nearest
    found = binary_rerank_search(queries, docs, 16, 1, median, k=1)[:, 0]
    bits = lambda x: np.unpackbits(packed_codes(x[:, :16], median), axis=1)  # noqa: E731
    hamming = (bits(queries)[:, None, :] != bits(docs)[None, :, :]).sum(-1)
    assert np.all(hamming[np.arange(20), found] == hamming.min(1))
    with pytest.raises(ConfigError, match="not a whole number of bytes"):
        packed_codes(docs[:, :12], median)
    assert model_thresholds("/nonexistent") is None


def test_an_exports_calibration_reproduces_training_time_codes(tmp_path):
    import json

    from mrl.tools.quantization import qat_calibration

    cal = RunningCalibration(16)
    for seed in range(3):
        cal.update(_sample(seed=seed))
    (tmp_path / "sentence-transformers").mkdir()
    (tmp_path / "sentence-transformers" / "qat_calibration.json").write_text(
        json.dumps(cal.as_dict())
    )
    loaded = qat_calibration(str(tmp_path))  # the run folder: its export's file
    x = _sample(seed=9)
    training_codes = binary_codes(x, cal.threshold) > 0
    bits = np.unpackbits(loaded.binary(x.numpy()), axis=1)[:, :16].astype(bool)
    assert np.array_equal(training_codes.numpy(), bits)
    np.testing.assert_allclose(
        loaded.int8_dequantized(loaded.int8(x.numpy())),
        fake_int8(x, cal.low, cal.high).numpy(), atol=1e-6,
    )  # fmt: skip
    assert qat_calibration(str(tmp_path / "nothing")) is None


@pytest.mark.parametrize("loss", ["mnrl", "mnrl_symmetric", "cosent", "angle"])
def test_the_term_works_with_every_base_loss(loss):
    from mrl.core.losses import BASE_LOSSES

    assert set(BASE_LOSSES) == {"mnrl", "mnrl_symmetric", "cosent", "angle"}
    base = base_loss(loss)
    n_cols = 2 if base.kind == "pairs" else 3
    cols = [_sample(8, seed=s).requires_grad_(True) for s in range(n_cols)]
    scores = torch.rand(8, generator=torch.Generator().manual_seed(0))
    batch = GlobalBatch(cols, cols, 0, scores if base.kind == "pairs" else None)
    cal = RunningCalibration(16)
    cal.update(torch.cat(cols))
    total, parts = qat_loss(base, batch, [QatTerm(8, "binary"), QatTerm(16, "int8")], cal)
    total.backward()
    assert torch.isfinite(total) and set(parts) == {"binary@8", "int8@16"}
    assert all(c.grad is not None and c.grad.abs().sum() > 0 for c in cols)
