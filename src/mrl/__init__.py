"""mrl: Matryoshka Representation Learning of sentence embeddings with Lightning + Hydra.

Nine subpackages, imports one way (docs/architecture.md): common <- core <- encoder <- data <-
artifacts <- evaluation <- run | tools | report.
"""

__version__ = "0.1.0"
