"""What every part of mrl may use, and which imports no other part: the one exception type
for bad user input (`errors`), online or not (`hub`: the Hugging Face Hub or the local mirrors,
wandb online or offline), files written whole (`files`: atomic writes), secrets kept out of
what a run records (`redact`), finite numbers in what is written (`numbers`), the command
line checked before Hydra composes, Hydra's own errors in one line (`cli`), and the keys a
config's files declare, so a key nothing reads is one line (`config_keys`).

May import: nothing of mrl.
"""

# the subpackages this one may import (tests/test_layout.py holds every module to it)
MAY_IMPORT = ()
