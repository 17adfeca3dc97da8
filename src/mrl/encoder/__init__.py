"""The sentence encoder: where a backbone and its tokenizer come from (`backbone`), pooling
(`pooling`), LoRA adapters (`lora`), the encoder module with its optional projection head,
gradient checkpointing and length-grouped chunks (`encoder`), the forward of BERT-style
backbones on the batch's real tokens only (`unpadded`), an encoder cut to its first K layers
(`depth`), and the cached (GradCache-style) step (`cached`). It knows nothing about the
loss or the data.

May import: mrl.common, mrl.core.
"""

# the subpackages this one may import (tests/test_layout.py holds every module to it)
MAY_IMPORT = ("common", "core")
