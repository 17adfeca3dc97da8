"""The LightningModule: wires one encode per batch, the Matryoshka loss and per-dim STS metrics."""

from __future__ import annotations

import lightning as L
import torch

from mrl.artifacts.pairs import TestPairs
from mrl.common.errors import ConfigError
from mrl.core.matryoshka import GlobalBatch, MatryoshkaLoss
from mrl.core.objective import TrainingObjective
from mrl.core.schedule import check_n_dims_per_step, eval_dims, training_schedule
from mrl.encoder.cached import cached_step
from mrl.encoder.encoder import Encoder, encoder_width
from mrl.evaluation.grid import flat_grid, spearman_grid
from mrl.evaluation.metrics import (
    mean_over_log2_dims,
    pair_similarities,
    retention,
    spearman_of_similarities,
)
from mrl.run.hparams import grouped_hparams
from mrl.run.optim import adamw_with_warmup
from mrl.run.random_states import random_states, restore_random_states


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite (`loss.on_nonfinite=stop`)."""

    def __init__(self, step: int, dims: list[int], value: float):
        self.step, self.dims, self.value = step, dims, value
        super().__init__(f"the loss is {value} at step {step} (non-finite at dims {dims})")


# a checkpoint's flag: the frozen backbone weights (under LoRA) were left out of its state_dict
FROZEN_LEFT_OUT = "frozen_backbone_left_out"


class MatryoshkaModule(L.LightningModule):
    """Trains an encoder with a Matryoshka loss and evaluates every prefix on STS pairs.

    Its arguments are the config groups as plain dicts (`model`, `matryoshka`, `loss`,
    `optim`; `dataset_losses`: a data mixture's base loss per dataset, which replaces
    `loss.name` for that dataset's batches), so a new option is one yaml line plus the code
    that reads it, and `load_from_checkpoint` rebuilds the module alone.
    `matryoshka.enabled=False` trains only the full width (the regular baseline) but still
    evaluates at every eval dim: the schedule dims plus the standard pow2 dims of the width,
    so runs with different schedules compare dim by dim.
    """

    def __init__(
        self,
        model: dict,
        matryoshka: dict | None = None,
        loss: dict | None = None,
        optim: dict | None = None,
        dataset_losses: dict | None = None,
        qat: dict | None = None,
    ):
        super().__init__()
        given = {"model": model, "matryoshka": matryoshka, "loss": loss, "optim": optim}
        groups = grouped_hparams({**given, "dataset_losses": dataset_losses, "qat": qat})
        self.save_hyperparameters(groups)
        m, lo, mc = groups["matryoshka"], groups["loss"], groups["model"]
        # the embedding width: the projection head's if there is one, else the hidden size
        hidden = encoder_width(mc["backbone"], mc["projection_dim"], mc["trust_remote_code"])
        source = "model.projection_dim" if mc["projection_dim"] else None  # for error lines
        # the schedule, its weights and the weights trained (the baseline: the full width only)
        self.schedule_dims, self.weights, train_weights = training_schedule(m, hidden, source)
        self.eval_dims = eval_dims(hidden, self.schedule_dims, m["min_dim_ratio"])
        check_n_dims_per_step(m["n_dims_per_step"], len(self.schedule_dims))
        if lo["on_nonfinite"] not in ("stop", "skip"):
            raise ConfigError(f"loss.on_nonfinite={lo['on_nonfinite']!r} must be 'stop' or 'skip'.")
        self.losses = {  # by batch["dataset"] (None: the one dataset without a mixture)
            dataset: MatryoshkaLoss(
                base, self.schedule_dims, train_weights, lo["scale"], m["n_dims_per_step"]
            )
            for dataset, base in (groups["dataset_losses"] or {None: lo["name"]}).items()
        }
        self.loss = next(iter(self.losses.values()))  # dims, weights, step draws: all the same
        self.encoder = Encoder(
            mc["backbone"], mc["pooling"], mc["chunk_size"], mc["trust_remote_code"],
            mc["projection_dim"], mc["lora"], mc["gradient_checkpointing"], mc["unpadded"],
        )  # fmt: skip
        if mc["compile"]:  # in place: parameter names (and checkpoints) stay the plain model's
            self.encoder.compile(dynamic=True)
        # the step's loss: over layers (2D Matryoshka) and with the QAT term when configured
        self.objective = TrainingObjective(
            self.losses, m, groups["qat"], self.encoder.depth, hidden
        )
        self.grid_layers = (
            None if self.objective.layers is None else list(range(1, self.encoder.depth + 1))
        )
        self.eval_grids: dict[str, dict] = {}
        self.skipped_batches = 0
        self._train_loader_state: dict | None = None  # set when resuming, applied at train start
        self.test_prefix = "test"  # train.py sets "untrained" to score the backbone before fit
        # cached mode back-propagates mini-batch by mini-batch, so it steps the optimizer itself
        self.automatic_optimization = lo["cached_mini_batch_size"] is None
        self._eval_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.eval_results: dict[str, dict[int, float]] = {}
        self.eval_pairs: dict[str, TestPairs] = {}  # per-pair similarities, for intervals

    @property
    def train_weights(self) -> list[float]:
        return self.loss.train_weights

    @property
    def train_dims(self) -> list[int]:
        return [d for d, w in zip(self.schedule_dims, self.train_weights, strict=True) if w != 0]

    def encode(self, batch: dict, layers: list[int] | None = None) -> torch.Tensor:
        return self.encoder(batch["input_ids"], batch["attention_mask"], layers)

    def loss_on_embeddings(
        self, embeddings: torch.Tensor, batch: dict, weights: list[float], layers=None
    ) -> tuple[torch.Tensor, dict]:
        """The step's loss (`mrl.core.objective`) of this rank's texts against the global batch,
        with the base loss of the batch's dataset (`batch["dataset"]`, else `loss.name`).

        Under several devices the full-width embeddings (of every encoded layer) are gathered
        once, with gradient, and every dim's similarities come from prefixes of that gather.
        """
        world, scores = self.trainer.world_size, batch.get("scores")
        gathered = self.all_gather(embeddings, sync_grads=True) if world > 1 else None
        if scores is not None and world > 1:
            scores = self.all_gather(scores).reshape(-1)

        def layer_batch(i: int | None) -> GlobalBatch:
            local = embeddings if i is None else embeddings[i]
            every = gathered if gathered is None or i is None else gathered[:, i]
            return GlobalBatch.from_embeddings(
                local, batch["n_rows"], every, self.global_rank, scores
            )

        return self.objective(layer_batch, layers, batch.get("dataset"), weights, self.global_step)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        n_rows, weights = batch["n_rows"], self.loss.step_weights()
        layers = self.objective.encode_layers()  # None: the last layer only
        if self.automatic_optimization:
            embeddings = self.encode(batch, layers)  # one encode: every column (and layer)
            loss, per_dim = self.loss_on_embeddings(embeddings, batch, weights, layers)
        else:
            loss, per_dim = self._cached_training_step(batch, weights, layers)
        if not torch.isfinite(loss):
            bad = [d for d, v in per_dim.items() if not torch.isfinite(v)]
            if self.hparams.loss["on_nonfinite"] == "stop":
                raise NonFiniteLoss(self.global_step, bad, float(loss.detach()))
            self.skipped_batches += 1  # no backward, no optimizer step for this batch
            self.log("train/skipped_batches", float(self.skipped_batches), batch_size=n_rows)
            return None
        self.log("train/loss", loss, prog_bar=True, batch_size=n_rows)
        dataset = batch.get("dataset")  # a mixture's batch also logs under its dataset
        if dataset is not None:
            self.log(f"train/loss/{dataset}", loss.detach(), batch_size=n_rows)
        for dim, value in per_dim.items():
            self.log(f"train/loss@{dim}", value.detach(), batch_size=n_rows)
            if dataset is not None:
                self.log(f"train/loss/{dataset}@{dim}", value.detach(), batch_size=n_rows)
        return loss

    def _cached_training_step(self, batch: dict, weights: list[float], layers=None):
        """Cached mode (`loss.cached_mini_batch_size`): see `mrl.encoder.cached`; steps the
        optimizer."""
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        strategy = self.trainer.strategy
        no_sync = strategy.block_backward_sync if self.trainer.world_size > 1 else None
        loss, per_dim = cached_step(
            lambda ids, mask: self.encoder(ids, mask, layers),
            batch["input_ids"],
            batch["attention_mask"],
            self.hparams.loss["cached_mini_batch_size"],
            lambda embeddings: self.loss_on_embeddings(embeddings, batch, weights, layers),
            backward=self.manual_backward,
            no_sync=no_sync,
        )
        if not torch.isfinite(loss):  # leave the parameters untouched; training_step decides
            optimizer.zero_grad()
            return loss, per_dim
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        return loss, per_dim

    # ---- evaluation: encode each STS sentence once, Spearman at every dim at epoch end ----

    def _eval_step(self, batch: dict) -> None:
        """Each pair's two embeddings (of every layer when the run trains several: a grid)."""
        embeddings = self.encode(batch, self.grid_layers).float()
        if embeddings.ndim == 3:  # layers x texts x width -> texts x (layers * width), in order
            embeddings = embeddings.transpose(0, 1).reshape(embeddings.shape[1], -1)
        n = batch["n_rows"]
        self._eval_outputs.append((embeddings[:n], embeddings[n:], batch["scores"]))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def _gather_eval_outputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All ranks' (sentence1, sentence2, score) rows in dataset order, each pair once."""
        hidden = self.encoder.width * len(self.grid_layers or [None])
        if self._eval_outputs:
            left, right, scores = (torch.cat(p) for p in zip(*self._eval_outputs, strict=True))
        else:  # a rank whose block of the eval set is empty
            left = right = torch.zeros(0, hidden, device=self.device)
            scores = torch.zeros(0, device=self.device)
        self._eval_outputs.clear()
        world = self.trainer.world_size
        if world == 1:
            return left, right, scores
        n_total = int(self.all_gather(torch.tensor(len(scores), device=self.device)).sum())
        block = -(-n_total // world)
        pad = block - len(scores)
        padded = [
            torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (left, right, scores[:, None])
        ]
        # blocks are contiguous and only the tail is padding: concatenate, then cut
        left, right, scores = (
            self.all_gather(t).reshape(world * block, -1)[:n_total] for t in padded
        )
        return left, right, scores[:, 0]

    def _eval_epoch_end(self, prefix: str) -> None:
        left, right, scores = self._gather_eval_outputs()
        if self.grid_layers:  # every layer's block: the grid; the last layer is the model
            left, right = (
                t.view(len(t), -1, self.encoder.width).transpose(0, 1) for t in (left, right)
            )
            grid = spearman_grid(left, right, scores, self.grid_layers, self.eval_dims)
            self.eval_grids[prefix] = grid
            for key, value in flat_grid(grid).items():
                self.log(f"{prefix}/spearman@{key}", value, sync_dist=True)
            left, right = left[-1], right[-1]
        sims = pair_similarities(left, right, self.eval_dims)  # kept for the intervals
        spearman = spearman_of_similarities(sims, scores)
        self.eval_results[prefix] = spearman
        self.eval_pairs[prefix] = TestPairs(scores.float().cpu().numpy(), sims)
        # every rank holds the same gathered set and the same values; sync_dist just agrees
        for dim, value in spearman.items():
            self.log(f"{prefix}/spearman@{dim}", value, sync_dist=True)
        for dim, value in retention(spearman).items():
            self.log(f"{prefix}/retention@{dim}", value, sync_dist=True)
        mean = mean_over_log2_dims(spearman)  # the default model-selection objective
        self.log(f"{prefix}/spearman_mean_log2", mean, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end(self.test_prefix)

    # ---- resuming mid-epoch: the data position and random states travel in the checkpoint ----

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Random states and the position in the epoch's batch order go with the weights, so
        a resumed run sees the same next batch, dropout masks and `n_dims_per_step` subsets
        as an uninterrupted one."""
        checkpoint["rng_states"] = random_states()
        loader = self.trainer.train_dataloader
        if hasattr(loader, "state_dict"):
            checkpoint["train_loader"] = loader.state_dict()
        if self.encoder.lora:  # the frozen backbone comes back from its source: keep it out
            for key in self.encoder.frozen_keys():
                checkpoint["state_dict"].pop(f"encoder.{key}", None)
            checkpoint[FROZEN_LEFT_OUT] = True

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get(FROZEN_LEFT_OUT):  # before Lightning loads it (strictly)
            prefix = "encoder."
            saved = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items()}
            full = self.encoder.with_frozen(saved)
            checkpoint["state_dict"].update({prefix + k: v for k, v in full.items()})
        restore_random_states(checkpoint.get("rng_states"))
        self._train_loader_state = checkpoint.get("train_loader")

    def on_train_start(self) -> None:
        # Lightning builds the loader before it restores a checkpoint (to count steps for the
        # scheduler) and then never hands it the saved state, so it is applied here, before
        # the first batch is drawn.
        state, self._train_loader_state = self._train_loader_state, None
        loader = self.trainer.train_dataloader
        if state and state["epoch"] == self.current_epoch and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(state)

    def on_train_epoch_start(self) -> None:
        # Lightning sets the epoch of a loader's sampler, not of our batch sampler: without this
        # every epoch repeats the first one's batches (overfit_batches keeps its own on purpose)
        sampler = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        if hasattr(sampler, "set_epoch") and not self.trainer.overfit_batches:
            sampler.set_epoch(self.current_epoch)

    def configure_optimizers(self):
        total = self.trainer.estimated_stepping_batches
        return adamw_with_warmup(self.named_parameters(), self.hparams.optim, total)
