"""Data: one split of one dataset from the Hub or the `MRL_DATA_DIR` mirror through a validating
loader (`sources`), BEIR retrieval sets (`beir`), tokenization, the no-duplicates resumable
batch sampler and the LightningDataModule (`datamodule`), dataset mixtures (`mixture`),
prompts (`prompts`) and the most tokens a backbone takes (`lengths`). It knows a tokenizer,
not a model.

May import: mrl.common, mrl.core, mrl.encoder.
"""

# the subpackages this one may import (tests/test_layout.py holds every module to it)
MAY_IMPORT = ("common", "core", "encoder")
