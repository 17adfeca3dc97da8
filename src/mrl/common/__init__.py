"""What every part of mrl may use, and which imports no other part: the one exception type
for bad user input (`errors`), online or not (`hub`: the Hugging Face Hub or the local mirrors,
wandb online or offline), files written whole (`files`: atomic writes), secrets kept out of
what a run records (`redact`), finite numbers in what is written (`numbers`), and the command
line checked before Hydra composes, Hydra's own errors in one line (`cli`).

May import: nothing of mrl.
"""

# the subpackages this one may import (tests/test_layout.py holds every module to it)
MAY_IMPORT = ()
