"""The Matryoshka core, plain torch and no Lightning: the dimension schedule and its weights
(`schedule`), the column-stacked batch layout (`batch`), the base losses at one prefix
(`losses`), the Matryoshka wrapper over any base loss with the DDP-gathered global batch
(`matryoshka`), 2D Matryoshka's layer schedule and loss (`layers`, `matryoshka2d`),
quantization-aware terms (`qat`), and what a training step minimises (`objective`).

May import: mrl.common.
"""

# the subpackages this one may import (tests/test_layout.py holds every module to it)
MAY_IMPORT = ("common",)
