"""Running one training configuration (train.py's engine): the lifecycle (`train`), the config
check pass (`checks`, `option_values`, `config_keys`: every key one the code reads), building
the module, data module and trainer (`build`), the numeric precision and bf16 on the CPU
(`precision`), the LightningModule and its hyper-parameters
(`module`, `hparams`, `optim`, `random_states`), atomic checkpoints and signals
(`reliability`), sweeps (`sweep`), retrieval as a validation signal (`retrieval_validation`)
and a run's extra outputs (`run_extras`).

May import: mrl.common, mrl.core, mrl.encoder, mrl.data, mrl.artifacts, mrl.evaluation.
"""

# the subpackages this one may import (tests/test_layout.py holds every module to it)
MAY_IMPORT = ("common", "core", "encoder", "data", "artifacts", "evaluation")
