"""What a run leaves on disk and how it is read back: the run folder's file names, lock and resume
lookup (`run_folder`), checkpoints loaded safely with one-line failures (`checkpoints`),
results.json and the curve (`results`), every STS test pair's cosine at every dim (`pairs`), the
sentence-transformers export, its model card and ONNX graph (`export`, `model_card`, `onnx`),
and any model (run folder, export, model folder or Hub id) loaded for the tools (`models`).
Training writes these, evaluation and the tools read them.

May import: mrl.common, mrl.core, mrl.encoder, mrl.data.
"""

# the subpackages this one may import (tests/test_layout.py holds every module to it)
MAY_IMPORT = ("common", "core", "encoder", "data")
