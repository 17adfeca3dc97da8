"""bf16 on the CPU: the processor check and its one line, what `auto` resolves to, a bf16 run's
float32 loss and similarities, and the bf16 numerics of `bf16-emulated` against real autocast."""

import contextlib
import json
import logging

import pytest
import torch
import torch.nn.functional as F

import mrl.core.matryoshka as matryoshka
import mrl.run.build as build
from mrl.run import precision
from tests.conftest import FAST

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE = "flags\t\t: fpu avx2 avx512f amx_tile amx_bf16 amx_int8\n"
GRAVITON3 = "Features\t: fp asimd sve bf16 i8mm\n"
AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"


@pytest.mark.parametrize(
    "cpuinfo, expected",
    [(ZEN4, "avx512_bf16"), (SAPPHIRE, "amx_bf16"), (GRAVITON3, "bf16"), (AVX2_ONLY, None)],
)
def test_cpu_bf16_support_reads_the_processor_flags(cpuinfo, expected):
    assert precision.cpu_bf16_support(cpuinfo) == expected


def test_bf16_on_a_cpu_without_bf16_units_is_one_line():
    line = precision.cpu_bf16_warning("bf16-mixed", "cpu", support=None)
    assert line is not None and "\n" not in line
    assert "trainer.precision=bf16-mixed" in line and "trainer=cpu" in line
    assert precision.cpu_bf16_warning("bf16-mixed", "cpu", support="avx512_bf16") is None
    assert precision.cpu_bf16_warning("32-true", "cpu", support=None) is None
    assert precision.cpu_bf16_warning("bf16-emulated", "cpu", support=None) is None


def test_auto_is_bf16_only_on_a_cpu_with_bf16_units():
    assert precision.resolve_precision("auto", "cpu", "avx512_bf16") == "bf16-mixed"
    assert precision.resolve_precision("auto", "cpu", None) == "32-true"
    assert precision.resolve_precision("32-true", "cpu", "amx_bf16") == "32-true"  # as typed
    assert precision.resolve_precision("bf16-mixed", "cpu", None) == "bf16-mixed"


def test_trainer_auto_resolves_with_the_processor(compose_cfg, monkeypatch):
    """`trainer=auto` (the default) on a machine without a GPU: bf16 where the CPU has bf16
    units, fp32 where it has none (the detection simulated both ways)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_cfg(["+exp=allnli_mrl", "model=tiny"])
    assert cfg.trainer.precision == "auto"
    for support, expected in (("avx512_bf16", "bf16-mixed"), (None, "32-true")):
        monkeypatch.setattr(build, "cpu_bf16_support", lambda s=support: s)
        assert build.trainer_args(cfg)["precision"] == expected


def test_results_say_what_auto_resolved_to(data_dir, run_main, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "cpu_bf16_support", lambda: None)
    run_dir = tmp_path / "run"
    run_main(["+exp=allnli_mrl", *FAST, "trainer.precision=auto", "trainer.max_steps=2",
              "data.batch_size=8"], run_dir)  # fmt: skip
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["trainer"]["precision"] == "auto"
    assert results["precision"] == "32-true"


@pytest.mark.parametrize("mode", ["bf16-mixed", "bf16-emulated"])
def test_a_bf16_cpu_run_trains_with_float32_loss_and_similarities(
    data_dir, run_main, tmp_path, monkeypatch, caplog, mode
):
    seen = {"similarities": set(), "loss": set(), "autocast": set()}
    prefix_similarities = matryoshka.prefix_cosine_similarities

    def recording_similarities(*args, **kwargs):
        sims = prefix_similarities(*args, **kwargs)
        seen["similarities"] |= {s.dtype for s in sims}
        return sims

    loss_of = matryoshka.matryoshka_loss

    def recording_loss(*args, **kwargs):
        seen["autocast"].add(torch.is_autocast_enabled("cpu"))  # the encoder's context
        total, per_dim = loss_of(*args, **kwargs)
        seen["loss"] |= {total.dtype, *(v.dtype for v in per_dim.values())}
        return total, per_dim

    monkeypatch.setattr(matryoshka, "prefix_cosine_similarities", recording_similarities)
    monkeypatch.setattr(matryoshka, "matryoshka_loss", recording_loss)
    monkeypatch.setattr(build, "cpu_bf16_support", lambda: None)  # a CPU without bf16 units
    run_dir = tmp_path / "run"
    overrides = ["+exp=allnli_mrl", *FAST, f"trainer.precision={mode}", "trainer.max_steps=3"]
    with caplog.at_level(logging.WARNING, logger="mrl.run.build"):
        run_main([*overrides, "data.batch_size=8", "trainer.log_every_n_steps=1"], run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 3 and results["config"]["trainer"]["precision"] == mode
    assert results["precision"] == mode  # what it computed in, also when `auto` was typed
    assert seen["autocast"] == {True}  # the encoder ran under bf16 autocast
    assert seen["similarities"] == {torch.float32} and seen["loss"] == {torch.float32}
    lines = [r.getMessage() for r in caplog.records if "without bf16 units" in r.getMessage()]
    assert len(lines) == (1 if mode == "bf16-mixed" else 0)  # emulated is a numerics check
    # the weights (and so the optimizer state) stay float32
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert {v.dtype for v in state["state_dict"].values() if v.is_floating_point()} == {
        torch.float32
    }


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_emulated_linear_is_bf16_autocasts_linear():
    """A bf16 unit multiplies bf16 operands exactly and sums in fp32: so does the emulation;
    only the order of the sums may differ (a last-bit rounding of a few outputs)."""
    torch.manual_seed(0)
    x, w, b = torch.randn(64, 96), torch.randn(80, 96) * 0.1, torch.randn(80) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        real = F.linear(x, w, b)
    with precision.emulated_bf16_autocast():
        emulated = F.linear(x, w, b)
    assert real.dtype == emulated.dtype == torch.bfloat16
    assert (real != emulated).float().mean() < 0.01
    assert _rel(emulated, real) < 1e-4 < _rel(F.linear(x, w, b), real)


@pytest.mark.parametrize("masked", [False, True])
def test_emulated_attention_is_closer_to_bf16_attention_than_fp32_is(masked):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 24, 16) for _ in range(3))
    mask = torch.ones(2, 1, 24, 24, dtype=torch.bool)
    mask[1, ..., 15:] = False  # the second text's last keys are padding
    kwargs = {"attn_mask": mask} if masked else {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        real = F.scaled_dot_product_attention(q, k, v, **kwargs)
    with precision.emulated_bf16_autocast():
        emulated = F.scaled_dot_product_attention(q, k, v, **kwargs)
    fp32 = F.scaled_dot_product_attention(q, k, v, **kwargs)
    assert emulated.dtype == torch.bfloat16
    assert _rel(emulated, real) < 0.5 * _rel(fp32, real)


def test_emulated_training_step_deviates_from_fp32_as_much_as_bf16_does():
    """Over a whole model bf16's rounding differences compound, so no two bf16 kernels agree
    element for element; what must hold is that the emulation moves the embeddings and the
    gradients away from fp32 by as much as real bf16 autocast does."""
    from transformers import AutoModel

    from mrl.encoder.backbone import tiny_config

    torch.manual_seed(0)
    model = AutoModel.from_config(tiny_config("mrl/tiny-random-bert")).eval()
    ids = torch.randint(5, model.config.vocab_size, (8, 20))
    mask = torch.ones_like(ids)
    mask[4:, 12:] = 0

    def step(context):
        model.zero_grad()
        with context:
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        emb = F.normalize((hidden.float() * mask[..., None]).sum(1), dim=-1)
        (emb @ emb.T).pow(2).sum().backward()
        grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
        return emb.detach(), torch.cat(grads)

    fp32 = step(contextlib.nullcontext())
    real = step(torch.autocast("cpu", dtype=torch.bfloat16))
    emulated = step(precision.emulated_bf16_autocast())
    for i in (0, 1):  # embeddings, gradients
        real_gap, emulated_gap = _rel(real[i], fp32[i]), _rel(emulated[i], fp32[i])
        assert real_gap > 1e-5  # bf16 does move them
        assert 0.7 < emulated_gap / real_gap < 1.4
