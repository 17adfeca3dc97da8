"""The tools on top of the library, for any model: shortlist-then-rerank retrieval
(`retrieval`, `binary_search`), truncation x quantization (`quantization`), hard-negative mining
(`mine`), MTEB's own scoring at every dim (`mteb_bridge`) and the demo page (`demo`). They never
import the training application.

May import: mrl.common, mrl.core, mrl.encoder, mrl.data, mrl.artifacts, mrl.evaluation.
"""

# the subpackages this one may import (tests/test_layout.py holds every module to it)
MAY_IMPORT = ("common", "core", "encoder", "data", "artifacts", "evaluation")
