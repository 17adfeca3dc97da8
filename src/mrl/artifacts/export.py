"""A trained run as a sentence-transformers model folder (weights, pooling, model card).

    python -m mrl.export RUN_DIR [--out FOLDER] [--push-to-hub ORG/NAME [--private]]

The folder loads with no code of ours: `SentenceTransformer(folder, truncate_dim=64)`. It holds
the backbone (safetensors) and tokenizer at its root, a Pooling module with our pooling, a stock
Dense module (identity activation, safetensors weights) when the encoder has a projection head
(`model.projection_dim`), no Normalize module (cosine similarity, the default, normalises each
truncated prefix itself), a README.md model card (`mrl.artifacts.model_card`: Hub metadata with a
model-index result per benchmark and dim, the per-dim results table, the training config),
mrl.json (the run's eval_dims and schedule_dims, which the tools use, and its projection_dim),
and the run's prompts by name (`mrl.data.prompts`). The backbone was trained without its pooler, so
sentence_bert_config.json tells transformers not to expect one (no "newly initialized" warning).
Built in a temp folder and renamed into place: a crash leaves no half-written export (files get
plain modes). --push-to-hub uploads a fresh export; offline it stops in one line before writing.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from mrl.artifacts.checkpoints import load_checkpoint
from mrl.artifacts.model_card import model_card
from mrl.artifacts.results import RunResults, load_results
from mrl.artifacts.run_folder import EXPORT_DIR, MRL_INFO, RunFolder
from mrl.common import hub
from mrl.common.cli import OneLineParser
from mrl.common.errors import ConfigError
from mrl.common.files import default_dir_mode, default_file_mode
from mrl.data.lengths import usable_positions
from mrl.data.prompts import export_prompts
from mrl.encoder.pooling import ST_POOLING_MODES

ST_MODELS = "sentence_transformers.models"
MODEL_KEYS = ("backbone", "pooling", "chunk_size", "compile", "trust_remote_code")
__all__ = ["EXPORT_DIR", "export_encoder", "export_run", "model_card", "model_hparams", "push_run"]


def model_hparams(hparams: dict) -> dict:
    """The model group of a checkpoint's hyper_parameters: `hparams["model"]` in checkpoints
    with grouped hparams, else the flat keys of earlier checkpoints."""
    if isinstance(hparams.get("model"), dict):
        return dict(hparams["model"])
    return {k: hparams[k] for k in MODEL_KEYS if k in hparams}


def _pooling_config(width: int, pooling: str) -> dict:
    """sentence-transformers' Pooling config.json for our `pooling` (its long-standing
    `pooling_mode_*` form, which every release of it reads)."""
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
    modes += ("weightedmean_tokens", "lasttoken")
    chosen = ST_POOLING_MODES[pooling]
    return {
        "word_embedding_dimension": width,
        **{f"pooling_mode_{mode}": mode == chosen for mode in modes},
        "include_prompt": True,
    }


def _set_json(path: Path, **values) -> None:
    """Set keys of a JSON file in place (a file of the export being built)."""
    content = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**content, **values}, indent=2))


def _write_dense(projection: torch.nn.Linear, folder: Path) -> dict:
    """The projection head as a stock sentence-transformers Dense module in `folder`: its
    weights (`linear.weight`, `linear.bias`) as model.safetensors; returns its config.json.
    The identity activation is a torch class, which Dense loads without trust_remote_code."""
    folder.mkdir()
    weights = {
        f"linear.{k}": v.detach().cpu().contiguous() for k, v in projection.state_dict().items()
    }
    save_file(weights, folder / "model.safetensors")
    return {
        "in_features": projection.in_features,
        "out_features": projection.out_features,
        "bias": projection.bias is not None,
        "activation_function": "torch.nn.modules.linear.Identity",
    }


def _chmod_tree(folder: Path) -> None:
    """Plain modes for a folder made by mkdtemp (0700) and files written as 0600."""
    os.chmod(folder, default_dir_mode())
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(Path(root) / name, default_dir_mode())
        for name in files:
            os.chmod(Path(root) / name, default_file_mode())


def export_encoder(
    encoder,
    tokenizer,
    out: Path,
    max_seq_length: int,
    backbone: str,
    results: RunResults | dict | None = None,
    note: str | None = None,
    repo_id: str | None = None,
    onnx: bool = False,
) -> Path:
    """Write `encoder` (an `mrl.encoder.encoder.Encoder`) and `tokenizer` as a sentence-transformers
    folder at `out`, which must not exist yet. `results` (a RunResults or its dict form) fill
    the model card and mrl.json; `note` replaces the card's table, `repo_id` names the model
    in it (see `model_card`); `onnx` also writes onnx/model.onnx (`mrl.artifacts.onnx`)."""
    out = Path(out)
    if isinstance(results, dict):
        results = RunResults.from_dict(results)
    if out.exists():
        raise ConfigError(f"{out} already exists; remove it or export to another folder (--out).")
    out.parent.mkdir(parents=True, exist_ok=True)
    encoder = encoder.merged()  # LoRA adapters merged in: a plain model (mrl.encoder.lora)
    hidden, width = encoder.backbone.config.hidden_size, encoder.width
    most = usable_positions(encoder.backbone.config, tokenizer)  # what the model can take
    max_seq_length = min(max_seq_length, most) if most else max_seq_length
    st_config = {"max_seq_length": max_seq_length, "do_lower_case": False}
    if getattr(encoder.backbone, "pooler", "none") is None:  # built with add_pooling_layer=False
        st_config["model_kwargs"] = {"add_pooling_layer": False}
    prompts = export_prompts(results.config if results is not None else {})  # mrl.data.prompts
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        encoder.backbone.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if tokenizer.padding_side != "right":
            # training padded on the right; every pooling reads the mask, so only
            # weighted_mean's positions would differ (sentence-transformers counts them from
            # the first kept token too), and right is also what the ONNX export assumes
            _set_json(tmp / "tokenizer_config.json", padding_side="right")
        (tmp / "1_Pooling").mkdir()
        files = {
            "modules.json": [
                {"idx": 0, "name": "0", "path": "", "type": f"{ST_MODELS}.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": f"{ST_MODELS}.Pooling"},
            ],
            "sentence_bert_config.json": st_config,
            "config_sentence_transformers.json": {"similarity_fn_name": "cosine", **prompts},
            "1_Pooling/config.json": _pooling_config(hidden, encoder.pooling),
        }  # fmt: skip
        if results is not None:
            files[MRL_INFO] = {
                "eval_dims": results.eval_dims, "schedule_dims": results.schedule_dims,
            }  # fmt: skip
        if encoder.projection is not None:  # after Pooling (and before any Normalize)
            files["2_Dense/config.json"] = _write_dense(encoder.projection, tmp / "2_Dense")
            files["modules.json"].append(
                {"idx": 2, "name": "2", "path": "2_Dense", "type": f"{ST_MODELS}.Dense"}
            )
            if MRL_INFO in files:
                files[MRL_INFO]["projection_dim"] = width
        for name, content in files.items():
            (tmp / name).write_text(json.dumps(content, indent=2))
        (tmp / "README.md").write_text(model_card(results, backbone, width, note, repo_id))
        if onnx:
            from mrl.artifacts.onnx import export_onnx

            export_onnx(encoder, tokenizer, tmp)
        _chmod_tree(tmp)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def encoder_from_checkpoint(state: dict, path: Path):
    """The trained encoder (eval mode, LoRA adapters not merged) and its tokenizer from a
    run's loaded checkpoint `state` (read from `path`, named in errors)."""
    from mrl.encoder.backbone import load_tokenizer
    from mrl.encoder.encoder import Encoder

    hparams = model_hparams(state.get("hyper_parameters") or {})
    if not hparams.get("backbone"):
        raise ConfigError(f"{path} names no backbone in its hyper_parameters.")
    backbone, trust = hparams["backbone"], bool(hparams.get("trust_remote_code", False))
    pooling = hparams.get("pooling", "mean")
    encoder = Encoder(
        backbone, pooling, trust_remote_code=trust, projection_dim=hparams.get("projection_dim"),
        lora=hparams.get("lora"), unpadded=hparams.get("unpadded", "auto"),
    )  # fmt: skip
    prefix = "encoder."
    weights = {k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    encoder.load_state_dict(encoder.with_frozen(weights))  # under LoRA the backbone's are left out
    return encoder.eval(), load_tokenizer(backbone, trust, pooling)


def export_run(
    run_dir: Path,
    out: Path | None = None,
    allow_earlier: bool = False,
    repo_id: str | None = None,
    layers: int | None = None,
    onnx: bool = False,
) -> Path:
    """Export a finished run from its results.json and checkpoints/last.ckpt; `layers=K`: its
    encoder cut to the first K layers (default folder `sentence-transformers-L<K>/`); `onnx`:
    with onnx/model.onnx.

    Runs made before last.ckpt was saved at the end may hold an earlier step's weights; those
    export only with `allow_earlier` (the model card then says which step, without the table).
    """
    from mrl.encoder.depth import cut_to_depth

    run = RunFolder(run_dir)
    if run.is_finished() and not run.last_ckpt.is_file():
        raise ConfigError(f"{run.path} has no checkpoints/last.ckpt to export the weights from.")
    results = load_results(run.path)
    state = load_checkpoint(  # one line if it does not load (mrl.artifacts.checkpoints)
        run.last_ckpt,
        f"restore it from a copy (the run's own export, {run.export}, holds the "
        "same weights if it is there).",
    )
    note, step, final = None, state.get("global_step"), results.global_step
    if step != final:
        if not allow_earlier:
            raise ConfigError(
                f"{run.last_ckpt} is from step {step} but the run ended at step {final}, so it "
                "is not the tested model; pass --allow-earlier-checkpoint to export it anyway."
            )
        note = f"weights from step {step} of {final}; the run's scores are not theirs"
    encoder, tokenizer = encoder_from_checkpoint(state, run.last_ckpt)
    encoder, backbone = encoder.merged(), encoder.backbone_name
    max_len = (results.config.get("data") or {}).get("max_seq_length", 128)
    out = Path(out) if out else run.export
    if layers is not None:  # a 2D Matryoshka model served at depth K (mrl.encoder.depth)
        depth = encoder.depth
        encoder = cut_to_depth(encoder, layers)
        out = out if out != run.export else run.path / f"{EXPORT_DIR}-L{layers}"
        note = f"the first {layers} of the run's {depth} layers; the run's table is for all {depth}"
    return export_encoder(
        encoder, tokenizer, out, max_len, backbone, results, note, repo_id, onnx=onnx
    )


def push_run(
    run_dir: Path,
    repo_id: str,
    private: bool = False,
    out: Path | None = None,
    allow_earlier: bool = False,
) -> tuple[Path | None, str]:
    """Export a run with a card naming `repo_id` and upload it to that Hub model repo (made if
    missing; `private` only applies to a new repo). The export goes to `out` (default: the
    run's export folder) when that does not exist yet, else to a temporary folder. Returns the
    local export (None when temporary) and the repo's url; one-line ConfigError offline."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError, HTTPError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ConfigError(
            f"--push-to-hub {repo_id!r} is not a Hub repo id; give ORG/NAME (letters, digits, "
            "'-', '_', '.')."
        ) from None
    if not hub.hub_reachable():
        raise ConfigError(
            f"cannot push to {repo_id}: the Hugging Face Hub is unreachable (no network, or "
            "HF_HUB_OFFLINE=1); nothing was uploaded. Push from a machine that is online."
        )
    target = Path(out) if out else RunFolder(run_dir).export
    with tempfile.TemporaryDirectory() as tmp:
        folder = target if not target.exists() else Path(tmp) / EXPORT_DIR
        export_run(run_dir, folder, allow_earlier, repo_id)
        api = HfApi()
        try:
            url = api.create_repo(
                repo_id, private=True if private else None, repo_type="model", exist_ok=True
            )
            api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                repo_type="model",
                commit_message=f"Upload {Path(run_dir).name} exported by mrl",
            )
        except (OSError, HTTPError, HFValidationError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"pushing to {repo_id} failed: {reason}") from None
    return (folder if folder == target else None), str(url)


def advised_dim(folder: Path) -> int:
    """A truncate_dim that fits the export: the smallest of its run's eval dims that keeps at
    least 1/6 of the width (64 of 384), else a quarter of the width."""
    width = json.loads((Path(folder) / "1_Pooling" / "config.json").read_text())[
        "word_embedding_dimension"
    ]
    try:
        info = json.loads((Path(folder) / MRL_INFO).read_text())
        width = int(info.get("projection_dim") or width)
        dims = [int(d) for d in info["eval_dims"] if width // 6 <= int(d) <= width]
    except (OSError, ValueError, KeyError, TypeError):
        dims = []
    return min(dims) if dims else max(1, width // 4)


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description="Export a run as a sentence-transformers model.")
    parser.add_argument("run_dir", type=Path, help="a finished run folder")
    parser.add_argument("--out", type=Path, help=f"target folder (default: RUN_DIR/{EXPORT_DIR})")
    parser.add_argument(
        "--allow-earlier-checkpoint",
        action="store_true",
        help="export last.ckpt even when it is from before the run's final step",
    )
    parser.add_argument(
        "--push-to-hub",
        metavar="ORG/NAME",
        help="upload the export to this Hub model repo (an existing --out is not an error: "
        "a fresh export is pushed)",
    )
    parser.add_argument(
        "--private", action="store_true", help="with --push-to-hub: make a new repo private"
    )
    parser.add_argument("--layers", type=int, help="export the encoder cut to its first K layers")
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also write onnx/model.onnx (inputs input_ids, attention_mask; outputs "
        "last_hidden_state, sentence_embedding), for onnxruntime; docs/backbones.md",
    )
    args = parser.parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()  # loading the backbone without its pooler
    transformers.logging.disable_progress_bar()  # no "Writing model shards" bar before errors
    try:
        if args.layers is not None and args.push_to_hub:
            raise ConfigError("--layers exports locally; push the folder it writes yourself.")
        if args.private and not args.push_to_hub:
            raise ConfigError("--private only applies with --push-to-hub ORG/NAME.")
        if args.push_to_hub:
            out, url = push_run(
                args.run_dir, args.push_to_hub, args.private, args.out,
                args.allow_earlier_checkpoint,
            )  # fmt: skip
        else:
            out = export_run(
                args.run_dir, args.out, args.allow_earlier_checkpoint, layers=args.layers,
                onnx=args.onnx,
            )  # fmt: skip
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if out is not None:
        print(f"exported to {out}; load it with SentenceTransformer({str(out)!r}, "
              f"truncate_dim={advised_dim(out)})")  # fmt: skip
    if args.push_to_hub:
        print(f"pushed to {url}; load it with SentenceTransformer({args.push_to_hub!r})")


if __name__ == "__main__":
    main()
