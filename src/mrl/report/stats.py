"""The numbers of a report: finished runs grouped (seeds pooled), per-dim mean and sample std,
retention, area under the curve, the "trained at each size" curves and the reference group.

Only runs with status `finished` count; failed, unfinished, corrupt and debug runs never
enter a group. All dims are ints. The intervals of differences are in mrl.report.intervals.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from mrl.artifacts.run_folder import RESULTS
from mrl.common.errors import ConfigError
from mrl.evaluation.metrics import mean_over_log2_dims
from mrl.report.runs import Run, run_fixed_dim

EACH_SIZE = "trained at each size"

# A `fixed_dim=<d>` token in a group label (an override or a folder name), with its separator.
_FIXED_DIM_TOKEN = re.compile(r"(?:^|(?<=[\s_/-]))(?:matryoshka\.)?fixed_dim=(\d+)(?![\w.])")


@dataclass
class Group:
    """Runs pooled over seeds. A "trained at each size" curve is a Group too: its `parts` map
    each dim to the group trained for that dim alone, and it has scores at those dims only."""

    label: str
    runs: list[Run]
    matryoshka: bool | None  # None: unknown (eval.py results) or mixed
    fixed_dim: int | None = None
    parts: dict[int, Group] = field(default_factory=dict)
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
        kinds = {r.results.matryoshka for r in members}
        matryoshka = kinds.pop() if len(kinds) == 1 else None
        group = Group(label, members, matryoshka, fixed_dim=group_fixed_dim(label, members))
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


def group_fixed_dim(label: str, runs: list[Run]) -> int | None:
    """The size a group was trained for alone: its runs' `matryoshka.fixed_dim`, else a
    `fixed_dim=<d>` in its label (a folder of a study); None for other groups."""
    sizes = {run_fixed_dim(r) for r in runs}
    if len(sizes) > 1:
        shown = ", ".join(sorted(str(s) for s in sizes))
        raise ConfigError(
            f"group {label!r} mixes runs trained at matryoshka.fixed_dim {shown}; give each "
            "size its own group (folder)."
        )
    (size,) = sizes
    if size is None and (match := _FIXED_DIM_TOKEN.search(label)):
        size = int(match.group(1))
    return size


def each_size_curves(groups: list[Group], dims: list[int]) -> list[Group]:
    """One "trained at each size" curve per family of fixed-dim groups (labels equal but for
    their fixed_dim): at dim d, the mean +- std of the group trained at d, measured at d."""
    families: dict[str, dict[int, Group]] = {}
    for g in groups:
        if g.fixed_dim in dims:
            rest = " ".join(_FIXED_DIM_TOKEN.sub(" ", g.label).split())
            family = families.setdefault(rest, {})
            if g.fixed_dim in family:
                raise ConfigError(
                    f"groups {family[g.fixed_dim].label!r} and {g.label!r} were both trained "
                    f"at {g.fixed_dim} alone; report one of them."
                )
            family[g.fixed_dim] = g
    curves = []
    for rest, parts in families.items():
        label = f"{EACH_SIZE} ({rest})" if rest else EACH_SIZE
        parts = dict(sorted(parts.items(), reverse=True))
        kinds = {p.matryoshka for p in parts.values()}
        curve = Group(label, [r for p in parts.values() for r in p.runs],
                      kinds.pop() if len(kinds) == 1 else None, parts=parts)  # fmt: skip
        for d, part in parts.items():
            curve.values[d] = part.values[d]
            curve.mean[d], curve.std[d] = part.mean[d], part.std[d]
        if set(parts) == set(dims):
            curve.auc_mean = area_under_curve(curve.mean, dims)
        curves.append(curve)
    return curves


def shown_groups(groups: list[Group], curves: list[Group], reference: Group) -> list[Group]:
    """The rows of the report's tables and plot: every group but those a curve stands for
    (unless it is the reference), then the curves."""
    parts = {id(p) for c in curves for p in c.parts.values()}
    return [g for g in groups if id(g) not in parts or g is reference] + curves


def pick_reference(groups: list[Group], requested: str | None) -> Group:
    """The group others are compared with: as requested, else the first baseline, else the
    first group that is not trained for one size alone, else the first."""
    if requested is not None:
        for group in groups:
            if group.label == requested:
                return group
        names = ", ".join(repr(g.label) for g in groups)
        raise ConfigError(f"--reference {requested!r} is not a group; the groups are {names}.")
    plain = [g for g in groups if g.fixed_dim is None and not g.parts]
    return next((g for g in plain if g.matryoshka is False), (plain or groups)[0])
