"""The numbers of a report: finished runs grouped (seeds pooled), per-dim mean and sample std,
retention, area under the curve, the reference group and differences beyond seed noise.

Only runs with status `finished` count; failed, unfinished, corrupt and debug runs never
enter a group. All dims are ints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mrl.errors import ConfigError
from mrl.metrics import mean_over_log2_dims
from mrl.report_runs import Run
from mrl.run_folder import RESULTS


@dataclass
class Group:
    label: str
    runs: list[Run]
    matryoshka: bool
    mean: dict[int, float] = field(default_factory=dict)
    std: dict[int, float] = field(default_factory=dict)
    retention_mean: dict[int, float] = field(default_factory=dict)
    retention_std: dict[int, float] = field(default_factory=dict)
    values: dict[int, list[float]] = field(default_factory=dict)
    auc_mean: float = math.nan
    auc_std: float = math.nan

    @property
    def n(self) -> int:
        return len(self.runs)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def area_under_curve(scores: dict[int, float], dims: list[int]) -> float:
    """Mean Spearman over the log2(dim) axis at `dims` (see `metrics.mean_over_log2_dims`)."""
    return mean_over_log2_dims({d: scores[d] for d in dims})


def common_dims(runs: list[Run]) -> list[int]:
    """The dims every run was evaluated at, largest first."""
    dim_sets = [set(r.results.eval_dims) for r in runs]
    return sorted(set.intersection(*dim_sets), reverse=True)


def untrained_scores(runs: list[Run], dims: list[int]) -> tuple[str, dict[int, float]] | None:
    """The backbone and its scores before training, from the first finished run that has them
    at every one of `dims` (None if none has)."""
    for run in runs:
        before = run.results.untrained_test if run.status == "finished" else None
        if before and all(d in before for d in dims):
            return run.results.backbone or "backbone", {d: before[d] for d in dims}
    return None


def aggregate(runs: list[Run]) -> tuple[list[Group], list[int]]:
    """Groups of finished runs with per-dim statistics over their seeds, on the common dims."""
    finished = [r for r in runs if r.status == "finished"]
    if not finished:
        debug = sum(r.status == "debug" for r in runs)
        left_out = f"; {debug} debug run(s) left out" if debug else ""
        raise ConfigError(
            f"no finished run (no valid {RESULTS}) below the given folders{left_out}."
        )
    dims = common_dims(finished)
    if not dims:
        raise ConfigError("the runs share no evaluated dimension; report runs of one backbone.")
    by_label: dict[str, list[Run]] = {}
    for run in finished:
        by_label.setdefault(run.group, []).append(run)
    groups = []
    full = max(dims)
    for label, members in by_label.items():
        group = Group(label, members, matryoshka=bool(members[0].results.matryoshka))
        aucs = []
        for run in members:
            scores = {d: run.results.test[d] for d in dims}
            aucs.append(area_under_curve(scores, dims))
            for d in dims:
                group.values.setdefault(d, []).append(scores[d])
        for d in dims:
            group.mean[d], group.std[d] = mean_std(group.values[d])
            ratios = [s / f for s, f in zip(group.values[d], group.values[full], strict=True)]
            group.retention_mean[d], group.retention_std[d] = mean_std(ratios)
        group.auc_mean, group.auc_std = mean_std(aucs)
        groups.append(group)
    return groups, dims


def pick_reference(groups: list[Group], requested: str | None) -> Group:
    """The group others are compared with: as requested, else the first baseline, else the first."""
    if requested is not None:
        for group in groups:
            if group.label == requested:
                return group
        names = ", ".join(repr(g.label) for g in groups)
        raise ConfigError(f"--reference {requested!r} is not a group; the groups are {names}.")
    return next((g for g in groups if not g.matryoshka), groups[0])


def beyond_noise(group: Group, reference: Group, dim: int) -> bool | None:
    """|difference of means| > std(group) + std(reference): the mean +- std bands do not
    overlap. None when either side has a single seed (no spread to compare with)."""
    if group.n < 2 or reference.n < 2:
        return None
    diff = abs(group.mean[dim] - reference.mean[dim])
    return diff > group.std[dim] + reference.std[dim]
