"""Hard-negative mining: k negatives per anchor, searched with FAISS among a candidate pool.

    python -m mrl.mine MODEL DATA.jsonl --out FILE.jsonl [--k 3] [--ranks 10 100]
                       [--margin 0.05] [--anchor premise --positive hypothesis --where label=0]

MODEL is any model the tools load (run folder, model folder, Hub id: `mrl.artifacts.models`). DATA
is a JSON Lines file of (anchor, positive) rows; the pool of candidates is, by default, the distinct
positives of the same file (`--pool FILE.jsonl --pool-column text` for another). Every text
is encoded once at full width (normalised), and each anchor's nearest pool texts by cosine are
searched exactly (faiss IndexFlatIP). A candidate becomes a negative when
  - it is not one of the anchor's own positives, nor the anchor itself;
  - its rank among the remaining candidates (0 = most similar) is in [rank_lo, rank_hi): the
    very top ranks of a large pool are often unlabelled positives;
  - its similarity is at most (similarity of the anchor's positive) - margin, which skips
    likely false negatives (the margin rule of NV-Retriever's "positive-aware" mining).
The k highest-ranked such candidates are kept; a row with fewer than k is dropped (counted).
Writes rows {anchor, positive, negative_1..negative_k} (atomically) and FILE.jsonl.mine.json:
the exact options, the counts, and quantiles of the positive and negative similarities.
Train on it with `data.train.local_file=... data.train.columns=[anchor,positive,negative_1,...]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrl.common.cli import OneLineParser
from mrl.common.errors import ConfigError
from mrl.common.files import write_atomic
from mrl.common.numbers import strict_json
from mrl.data.lengths import check_length, model_positions
from mrl.data.sources import json_objects

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SEARCH_CHUNK = 1024  # anchors per FAISS search call (one progress-bar step)


@dataclass(frozen=True)
class MiningRule:
    """Which candidates may become negatives (see the module docstring)."""

    k: int = 3
    rank_lo: int = 10
    rank_hi: int = 100
    margin: float = 0.05

    def check(self, pool_size: int) -> None:
        if not -1 < self.margin < 2:  # cosines lie in [-1, 1]: a gap of 2 or more drops all
            raise ConfigError(
                f"--margin {self.margin} must be a number in [0, 2) (how far below the "
                "anchor's positive a negative's similarity must be; 0 = no margin, e.g. 0.05)."
            )
        if self.margin < 0:
            raise ConfigError(
                f"--margin {self.margin} is negative: it would keep candidates MORE similar "
                "than the anchor's own positive (likely false negatives); use 0 or more, e.g. 0.05."
            )
        if self.k < 1:
            raise ConfigError(f"--k {self.k} must be >= 1 (negatives per anchor).")
        if not 0 <= self.rank_lo < self.rank_hi:
            raise ConfigError(
                f"--ranks {self.rank_lo} {self.rank_hi} must satisfy 0 <= LO < HI, e.g. 10 100."
            )
        if self.rank_hi - self.rank_lo < self.k:
            raise ConfigError(
                f"--ranks {self.rank_lo} {self.rank_hi} leave {self.rank_hi - self.rank_lo} "
                f"candidates for --k {self.k}; widen the range."
            )
        if pool_size < self.k:
            raise ConfigError(
                f"the candidate pool has {pool_size} texts, fewer than --k {self.k}; give a "
                "larger --pool or a smaller --k."
            )


def select_negatives(
    anchors: np.ndarray,
    pool: np.ndarray,
    positive_scores: np.ndarray,
    excluded: list[set[int]],
    rule: MiningRule,
    progress: bool = False,
) -> tuple[list[list[int]], list[list[float]]]:
    """For each anchor row, the pool indices (and similarities) of its negatives.

    `anchors` (n, d) and `pool` (m, d) are L2-normalised; `positive_scores` (n,) is each
    anchor's similarity to its own positive; `excluded[i]` are pool indices that are never
    negatives of anchor i (its positives, the anchor text itself). A row whose list is shorter
    than `rule.k` could not be filled.
    """
    import faiss
    from tqdm.auto import tqdm

    rule.check(len(pool))
    index = faiss.IndexFlatIP(pool.shape[1])
    index.add(np.ascontiguousarray(pool, dtype=np.float32))
    depth = max(len(e) for e in excluded) if excluded else 0
    top = min(len(pool), rule.rank_hi + depth)
    chosen: list[list[int]] = []
    scores: list[list[float]] = []
    starts = range(0, len(anchors), SEARCH_CHUNK)
    for start in tqdm(starts, desc="mining", disable=not progress, unit="chunk"):
        block = np.ascontiguousarray(anchors[start : start + SEARCH_CHUNK], dtype=np.float32)
        sims, ids = index.search(block, top)
        for row, (row_sims, row_ids) in enumerate(zip(sims, ids, strict=True)):
            i = start + row
            ceiling = positive_scores[i] - rule.margin
            rank, picked, picked_sims = 0, [], []
            for sim, j in zip(row_sims, row_ids, strict=True):
                if j < 0 or j in excluded[i]:
                    continue
                if rank >= rule.rank_hi:
                    break
                if rank >= rule.rank_lo and sim <= ceiling:
                    picked.append(int(j))
                    picked_sims.append(float(sim))
                    if len(picked) == rule.k:
                        break
                rank += 1
            chosen.append(picked)
            scores.append(picked_sims)
    return chosen, scores


def _read_pairs(path: Path, anchor: str, positive: str, where: dict[str, str]):
    if not path.is_file():
        raise ConfigError(f"DATA {path} does not exist; give a JSON Lines file of pairs.")
    rows = []
    for number, obj in json_objects(path, (anchor, positive)):
        if any(str(obj.get(k)) != v for k, v in where.items()):
            continue
        a, p = obj.get(anchor), obj.get(positive)
        if not isinstance(a, str) or not isinstance(p, str):
            raise ConfigError(
                f"{path} line {number} has no text in {anchor!r} and {positive!r}; pick the "
                "columns with --anchor/--positive."
            )
        if a.strip() and p.strip():
            rows.append((a, p))
    if not rows:
        raise ConfigError(f"{path} has no ({anchor}, {positive}) rows matching --where {where}.")
    return rows


def _quantiles(values) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {}
    return {f"q{int(q * 100):02d}": round(float(np.quantile(values, q)), 4) for q in QUANTILES}


def mine(args: argparse.Namespace) -> dict:
    from mrl.artifacts.models import load_model

    bad = [item for item in args.where if "=" not in item]
    if bad:
        raise ConfigError(f"--where {bad[0]!r} must be FIELD=VALUE, e.g. --where label=0.")
    where = dict(item.split("=", 1) for item in args.where)
    rows = _read_pairs(args.data, args.anchor, args.positive, where)
    if args.pool:
        pool_texts = [o.get(args.pool_column) for _, o in json_objects(args.pool)]
        pool_texts = list(dict.fromkeys(t for t in pool_texts if isinstance(t, str) and t.strip()))
    else:
        pool_texts = list(dict.fromkeys(p for _, p in rows))
    rule = MiningRule(args.k, args.ranks[0], args.ranks[1], args.margin)
    rule.check(len(pool_texts))
    position = {text: j for j, text in enumerate(pool_texts)}
    positives_of: dict[str, set[int]] = {}
    for a, p in rows:
        positives_of.setdefault(a, set()).update({position[p]} if p in position else set())
    excluded = [positives_of[a] | ({position[a]} if a in position else set()) for a, _ in rows]

    with tempfile.TemporaryDirectory() as workdir:
        model = load_model(args.model, args.device, False, Path(workdir))
        if args.max_seq_length:
            limit = model_positions(model)
            check_length(args.max_seq_length, "--max-seq-length", limit, args.model)
            model.max_seq_length = args.max_seq_length

        def encode(texts):
            return model.encode(
                texts, batch_size=args.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=len(texts) >= 1000,
            )  # fmt: skip

        anchor_texts = list(dict.fromkeys(a for a, _ in rows))
        anchor_emb = encode(anchor_texts)
        pool_emb = encode(pool_texts)
        if args.pool:  # the positives are not (all) in the pool: encode them too
            positive_texts = list(dict.fromkeys(p for _, p in rows))
            at = {p: i for i, p in enumerate(positive_texts)}
            positive_emb = encode(positive_texts)[[at[p] for _, p in rows]]
        else:
            positive_emb = pool_emb[[position[p] for _, p in rows]]
    anchor_at = {a: i for i, a in enumerate(anchor_texts)}
    anchors = anchor_emb[[anchor_at[a] for a, _ in rows]]
    positive_scores = (anchors * positive_emb).sum(-1)
    chosen, sims = select_negatives(anchors, pool_emb, positive_scores, excluded, rule, True)

    lines, kept_neg, kept_pos = [], [], []
    for (a, p), picked, picked_sims, pos in zip(rows, chosen, sims, positive_scores, strict=True):
        if len(picked) < rule.k:
            continue
        row = {"anchor": a, "positive": p}
        row.update({f"negative_{n + 1}": pool_texts[j] for n, j in enumerate(picked)})
        lines.append(json.dumps(row, ensure_ascii=False))
        kept_neg.extend(picked_sims)
        kept_pos.append(float(pos))
    if not lines:
        raise ConfigError(
            f"no anchor got {rule.k} negatives within ranks [{rule.rank_lo}, {rule.rank_hi}) "
            f"and margin {rule.margin}; widen --ranks or lower --margin."
        )
    summary = {
        "model": str(args.model), "data": str(args.data), "where": where,
        "anchor": args.anchor, "positive": args.positive,
        "pool": str(args.pool) if args.pool else "the positives of DATA",
        "k": rule.k, "ranks": [rule.rank_lo, rule.rank_hi], "margin": rule.margin,
        "max_seq_length": args.max_seq_length, "rows_in": len(rows), "rows_out": len(lines),
        "rows_dropped": len(rows) - len(lines), "pool_size": len(pool_texts),
        "positive_similarity": _quantiles(kept_pos), "negative_similarity": _quantiles(kept_neg),
    }  # fmt: skip
    summary_json = strict_json(summary, f"{args.out}.mine.json", indent=2)
    write_atomic(args.out, "\n".join(lines) + "\n")
    write_atomic(Path(f"{args.out}.mine.json"), summary_json + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m mrl.mine", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="Hub id, model folder or run folder to encode with")
    parser.add_argument("data", type=Path, help="JSON Lines of (anchor, positive) rows")
    parser.add_argument(
        "--out", type=Path, required=True,
        help="a new .jsonl for the mined rows (+ FILE.mine.json); never an existing file",
    )  # fmt: skip
    parser.add_argument("--k", type=int, default=3, help="negatives per anchor (3)")
    parser.add_argument(
        "--ranks", type=int, nargs=2, default=[10, 100], metavar=("LO", "HI"),
        help="negatives come from candidate ranks [LO, HI), 0 = most similar (10 100)",
    )  # fmt: skip
    parser.add_argument(
        "--margin", type=float, default=0.05,
        help="a negative's similarity is at most the positive's minus this, in [0, 2) (0.05)",
    )  # fmt: skip
    parser.add_argument("--anchor", default="anchor", help="field of the anchor text (anchor)")
    parser.add_argument(
        "--positive", default="positive", help="field of the positive text (positive)"
    )
    parser.add_argument(
        "--where", nargs="*", default=[], metavar="FIELD=VALUE",
        help="keep only the rows whose FIELD is VALUE, e.g. label=0",
    )  # fmt: skip
    parser.add_argument(
        "--pool", type=Path, default=None,
        help="JSON Lines of candidate texts (default: the positives of DATA)",
    )  # fmt: skip
    parser.add_argument("--pool-column", default="text", help="field of --pool's texts (text)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per encode call (64)")
    parser.add_argument(
        "--max-seq-length", type=int, default=None,
        help="tokens per text (default: the model's own; at most what it can take)",
    )  # fmt: skip
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if any)")
    args = parser.parse_args(argv)
    try:
        if args.out.exists():
            raise ConfigError(f"--out {args.out} exists; give a new file (nothing is overwritten).")
        if Path(f"{args.out}.mine.json").exists():
            raise ConfigError(f"{args.out}.mine.json exists; give another --out.")
        for option, value in (("--batch-size", args.batch_size),
                              ("--max-seq-length", args.max_seq_length)):  # fmt: skip
            if value is not None and value < 1:
                raise ConfigError(f"{option} {value} must be a whole number >= 1.")
        summary = mine(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
