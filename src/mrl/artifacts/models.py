"""Any model, for the tools (eval.py, retrieval, quantization, demo): a run folder, a model
folder or a Hub id, loaded as a sentence-transformers model with one-line errors; and the dims
a tool uses for it when none are given.

No training code here (no Lightning): a run folder loads through its `sentence-transformers/`
export, or an export of its checkpoint made in a temporary folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mrl.artifacts.run_folder import EXPORT_DIR, MRL_INFO, RESULTS, RunFolder
from mrl.common.errors import ConfigError
from mrl.core.schedule import check_dims, dims_from_rule

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
# a model folder needs one of these to tokenize as it was trained (transformers would otherwise
# build a default tokenizer from the config alone, which gives other token ids)
TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
    "sentencepiece.bpe.model",
)  # fmt: skip


def slug(text: str | None) -> str:
    """A folder name for a model id or path: other characters than [A-Za-z0-9._=-] -> '_'."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", str(text or "")).strip("_") or "model"


def _has(folder: Path, names: tuple[str, ...]) -> bool:
    return any(next(folder.rglob(name), None) for name in names)


def model_folder(model: str, workdir: Path) -> Path | None:
    """The local folder `model` loads from (a run folder: its export, made in `workdir` if it
    has none), or None for a Hub id. One-line ConfigError when it cannot be used."""
    from mrl.common.hub import MIRROR_HINT, hub_reachable
    from mrl.encoder.backbone import resolve_backbone

    path = Path(model)
    run = RunFolder(path)
    if run.is_finished():  # one of our runs
        if run.export.is_dir():
            path = run.export
        else:
            from mrl.artifacts.export import export_run

            path = export_run(path, Path(workdir) / EXPORT_DIR)
    elif not path.is_dir():
        resolved = resolve_backbone(model)
        if resolved != model:  # $MRL_MODEL_DIR/<name>
            path = Path(resolved)
        elif path.is_absolute() or model.startswith(".") or model.count("/") > 1 or path.exists():
            raise ConfigError(  # a path, not a Hub id (org/name)
                f"model={model!r} is not a folder; give a run folder, a model folder or a Hub "
                "id (org/name)."
            )
        elif not hub_reachable():
            raise ConfigError(
                f"model={model!r} is neither a local folder nor reachable on the Hub; "
                f"{MIRROR_HINT} (MRL_MODEL_DIR must hold a folder named {model.split('/')[-1]!r})."
            )
        else:
            return None
    if not _has(path, WEIGHT_FILES):
        raise ConfigError(
            f"model={model!r}: {path} holds no weights ({', '.join(WEIGHT_FILES[:2])}); "
            "give a trained model folder, a run folder or a Hub id."
        )
    if not _has(path, TOKENIZER_FILES):
        raise ConfigError(
            f"model={model!r}: {path} has no tokenizer files ({' / '.join(TOKENIZER_FILES[:3])} "
            "/ ...); save the tokenizer with the model (tokenizer.save_pretrained(folder)) "
            "rather than let one be built from the config alone."
        )
    return path


def check_device(device, option: str = "device") -> str | None:
    """null (cuda if available, else cpu), cpu, cuda or cuda:N of a visible GPU; one line else."""
    import torch

    if device is None:
        return None
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|mps", device):
        raise ConfigError(f"{option}={device!r} must be null, cpu, cuda or cuda:N.")
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"{option}={device} but this machine has {torch.cuda.device_count()} visible "
                "GPU(s); use device=cpu or device=null."
            )
    return device


def load_model(model: str, device: str | None, trust_remote_code: bool, workdir: Path):
    """A SentenceTransformer for a run folder, a model folder or a Hub id (with one-line errors).

    `workdir`: where a run without an export gets one made (it must outlive the loading only).
    """
    from sentence_transformers import SentenceTransformer

    device = check_device(device)
    folder = model_folder(model, workdir)
    source = str(folder) if folder is not None else model
    try:
        return SentenceTransformer(source, device=device, trust_remote_code=trust_remote_code)
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise ConfigError(
                f"model={model!r} ships its own code; read it, then set trust_remote_code=true."
            ) from None
        raise
    except OSError as err:
        raise ConfigError(
            f"model={model!r} could not be loaded: {str(err).splitlines()[0]}"
        ) from None
    except Exception as err:  # weights cut short (SafetensorError, a torch zip error) or refused
        import pickle

        from mrl.artifacts.checkpoints import BROKEN, first_line, refused

        if isinstance(err, pickle.UnpicklingError):
            raise ConfigError(f"model={model!r}: {refused(source)}.") from None
        if not isinstance(err, BROKEN) and type(err).__name__ != "SafetensorError":
            raise
        raise ConfigError(
            f"model={model!r}: the weights in {source} do not load ({first_line(err)}): a "
            "file there is cut short or corrupt; copy or export the model again."
        ) from None


def recorded_eval_dims(model: str) -> tuple[list[int], str] | None:
    """The eval dims one of our runs recorded for `model` and the file they are from: a run
    folder's results.json, an export's mrl.json (or, for an export made before mrl.json, the
    results.json of the run folder around it); None for any other model."""
    from mrl.artifacts.results import load_results

    path = Path(model)
    if not path.is_dir():
        from mrl.encoder.backbone import resolve_backbone

        path = Path(resolve_backbone(model))
    if (path / RESULTS).is_file():
        return load_results(path).eval_dims, str(path / RESULTS)
    info = path / MRL_INFO
    if info.is_file():
        try:
            return [int(d) for d in json.loads(info.read_text())["eval_dims"]], str(info)
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"{info} is not a valid {MRL_INFO} ({type(err).__name__}: {err}); delete it "
                "(the tools then use the pow2 dims) or export the run again."
            ) from None
    if path.name == EXPORT_DIR and (path.parent / RESULTS).is_file():
        return load_results(path.parent).eval_dims, str(path.parent / RESULTS)
    return None


def model_eval_dims(model: str, width: int) -> list[int]:
    """The dims a tool uses for `model` when none are given: the run's own eval dims (from its
    results.json or its export's mrl.json), else the pow2 dims of the width (a foreign model)."""
    recorded = recorded_eval_dims(model)
    if recorded is None:
        return dims_from_rule(width)
    dims, origin = recorded
    return check_dims(dims, width, f"eval_dims in {origin}")


def embedding_width(model) -> int:
    """The full embedding width of a loaded SentenceTransformer (either method name)."""
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def saved_calibration(model: str) -> dict[str, list[float]] | None:
    """The calibration a QAT model was trained with (`low`, `high`, `threshold` per dim), from
    its folder or, for a run folder, its export; None for any other model (or a Hub id)."""
    from mrl.core.qat import QAT_CALIBRATION  # torch loads only when a tool asks

    for folder in (Path(model), Path(model) / EXPORT_DIR):
        if (folder / QAT_CALIBRATION).is_file():
            return json.loads((folder / QAT_CALIBRATION).read_text())
    return None
