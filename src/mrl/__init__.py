"""mrl: Matryoshka Representation Learning of sentence embeddings with Lightning + Hydra."""

__version__ = "0.1.0"
