"""A trained run as a sentence-transformers model folder (weights, pooling, model card).

    python -m mrl.export RUN_DIR [--out FOLDER]

The folder loads with no code of ours: `SentenceTransformer(folder, truncate_dim=64)`. It holds
the backbone (safetensors) and tokenizer at its root, a Pooling module with our pooling, no
Normalize module (cosine similarity, the default, normalises each truncated prefix itself), and
a README.md model card with the per-dim results table and the training config. It is built in
a temp folder and renamed into place, so a crash leaves no half-written export.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from mrl.errors import ConfigError
from mrl.results import curve_rows, load_results

EXPORT_DIR = "sentence-transformers"
ST_MODELS = "sentence_transformers.models"


def _pooling_config(width: int, pooling: str) -> dict:
    return {
        "word_embedding_dimension": width,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }


def model_card(results: dict | None, backbone: str, width: int) -> str:
    """README.md of the export: how to load it, the per-dim table, the training config."""
    lines = [
        "---",
        "library_name: sentence-transformers",
        "tags: [sentence-transformers, sentence-similarity, matryoshka]",
        f"base_model: {backbone}",
        "---",
        "",
        f"# Matryoshka sentence encoder ({width} dims) trained with mrl",
        "",
        "Its embedding can be cut to a prefix and keep most of its quality:",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        'model = SentenceTransformer("PATH_TO_THIS_FOLDER", truncate_dim=64)',
        'embeddings = model.encode(["A man is playing a guitar."])',
        "```",
        "",
    ]
    if results and "note" in results:
        lines += [f"Note: {results['note']}.", ""]
    elif results:
        lines += [
            f"## STS-B test Spearman (cosine) by dimension — `{results['experiment']}`, "
            f"seed {results.get('seed')}",
            "",
            "| dim | Spearman | retention | backbone before training |",
            "| --- | --- | --- | --- |",
        ]
        for row in curve_rows(results):
            before = row.get("untrained_test_spearman")
            lines.append(
                f"| {row['dim']} | {row['test_spearman']:.4f} | "
                f"{100 * row['test_retention']:.1f} % | "
                f"{'-' if before is None else f'{before:.4f}'} |"
            )
        trained = results.get("train_dims")
        lines += ["", f"Loss trained at dims {trained}, weights {results.get('weights')}.", ""]
        lines += ["## Training config", "", "```yaml"]
        lines.append(yaml.safe_dump(results.get("config", {}), sort_keys=False).rstrip())
        lines += ["```", ""]
    return "\n".join(lines)


def export_encoder(
    encoder,
    tokenizer,
    out: Path,
    max_seq_length: int,
    backbone: str,
    results: dict | None = None,
) -> Path:
    """Write `encoder` (an `mrl.encoder.Encoder`) and `tokenizer` as a sentence-transformers
    folder at `out`, which must not exist yet."""
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} already exists; remove it or export to another folder (--out).")
    out.parent.mkdir(parents=True, exist_ok=True)
    width = encoder.backbone.config.hidden_size
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        encoder.backbone.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "1_Pooling").mkdir()
        files = {
            "modules.json": [
                {"idx": 0, "name": "0", "path": "", "type": f"{ST_MODELS}.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": f"{ST_MODELS}.Pooling"},
            ],
            "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False},
            "config_sentence_transformers.json": {"similarity_fn_name": "cosine", "prompts": {}},
            "1_Pooling/config.json": _pooling_config(width, encoder.pooling),
        }  # fmt: skip
        for name, content in files.items():
            (tmp / name).write_text(json.dumps(content, indent=2))
        (tmp / "README.md").write_text(model_card(results, backbone, width))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_run(run_dir: Path, out: Path | None = None, allow_earlier: bool = False) -> Path:
    """Export a finished run from its results.json and checkpoints/last.ckpt.

    Runs made before last.ckpt was saved at the end may hold an earlier step's weights; those
    export only with `allow_earlier` (the model card then says which step, without the table).
    """
    from mrl.encoder import Encoder, load_tokenizer

    run_dir = Path(run_dir)
    results = load_results(run_dir)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise ConfigError(f"{run_dir} has no checkpoints/last.ckpt to export the weights from.")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    card, step, final = results, state.get("global_step"), results.get("global_step")
    if step != final:
        if not allow_earlier:
            raise ConfigError(
                f"{ckpt} is from step {step} but the run ended at step {final}, so it is not the "
                "tested model; pass --allow-earlier-checkpoint to export it anyway."
            )
        card = {"note": f"weights from step {step} of {final}; the run's scores are not theirs"}
    hparams = state["hyper_parameters"]
    trust = hparams.get("trust_remote_code", False)
    encoder = Encoder(hparams["backbone"], hparams["pooling"], trust_remote_code=trust)
    prefix = "encoder."
    weights = {k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    encoder.load_state_dict(weights)
    tokenizer = load_tokenizer(hparams["backbone"], trust)
    max_len = results.get("config", {}).get("data", {}).get("max_seq_length", 128)
    out = out or run_dir / EXPORT_DIR
    return export_encoder(encoder, tokenizer, out, max_len, hparams["backbone"], card)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export a run as a sentence-transformers model.")
    parser.add_argument("run_dir", type=Path, help="a finished run folder")
    parser.add_argument("--out", type=Path, help=f"target folder (default: RUN_DIR/{EXPORT_DIR})")
    parser.add_argument(
        "--allow-earlier-checkpoint",
        action="store_true",
        help="export last.ckpt even when it is from before the run's final step",
    )
    args = parser.parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()  # the unused pooler of the backbone is expected
    try:
        out = export_run(args.run_dir, args.out, args.allow_earlier_checkpoint)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    print(f"exported to {out}; load it with SentenceTransformer({str(out)!r}, truncate_dim=64)")


if __name__ == "__main__":
    main()
