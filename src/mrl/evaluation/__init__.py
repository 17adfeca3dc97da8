"""Scoring any encoder at every prefix from one encode: STS Spearman and a curve's summaries
(`metrics`), retrieval metrics and BEIR sets (`retrieval`), the layers x dims grid (`grid`),
bootstrap intervals of differences (`intervals`), the post-hoc comparators (`posthoc`; maps
applied before the cut: `transforms`, `adaptor`; per-dim ones: random subsets in `transforms`,
CSR sparse codes in `csr`), prefixes stored as float16 / int8 / binary with their bytes
(`storage`), and eval.py's engine (`evaluate`). No training code.

May import: mrl.common, mrl.core, mrl.encoder, mrl.data, mrl.artifacts.
"""

# the subpackages this one may import (tests/test_layout.py holds every module to it)
MAY_IMPORT = ("common", "core", "encoder", "data", "artifacts")
