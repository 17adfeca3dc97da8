"""Issue 5 check: an exported run, loaded by sentence-transformers with truncate_dim, gives the
same per-dim STS-B test Spearman as our own evaluation of the same weights (checked at 384, 64
and 32 dims, each a separate sentence-transformers model and encode).

    MRL_DATA_DIR=../shared/data MRL_MODEL_DIR=../shared/models \
        python experiments/check_export.py "outputs/runs/allnli_mrl/seed42/model=minilm_l6"
"""

import sys

import torch
from sentence_transformers import SentenceTransformer

from mrl.artifacts.export import model_hparams
from mrl.artifacts.run_folder import RunFolder
from mrl.data.sources import Source, load_source
from mrl.encoder.backbone import load_tokenizer
from mrl.encoder.encoder import Encoder
from mrl.evaluation.metrics import spearman_by_dim
from mrl.tools.quantization import STSB_TEST

run = RunFolder(sys.argv[1])
export = run.export
state = torch.load(run.last_ckpt, map_location="cpu", weights_only=True)
hparams = model_hparams(state["hyper_parameters"])  # grouped (new) or flat (old) checkpoints
backbone = hparams["backbone"]
encoder = Encoder(backbone, hparams.get("pooling", "mean"))
encoder.load_state_dict(
    {k[8:]: v for k, v in state["state_dict"].items() if k.startswith("encoder.")}
)
encoder.eval()
tokenizer = load_tokenizer(backbone)
rows = load_source(Source(**STSB_TEST))  # $MRL_DATA_DIR/stsb/test.jsonl, validated
left, right = list(rows["sentence1"]), list(rows["sentence2"])
gold = list(rows["score"])  # rescaled to [0, 1]: Spearman is the same


def ours(texts):
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 128):
            b = tokenizer(
                texts[i : i + 128],
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            out.append(encoder(b["input_ids"], b["attention_mask"]))
    return torch.cat(out)


dims = [384, 256, 128, 64, 32]
our_scores = spearman_by_dim(ours(left), ours(right), gold, dims)
print(
    f"checkpoint step {state['global_step']}; STS-B test Spearman, "
    "ours vs sentence-transformers(truncate_dim=d)"
)
print("| dim | ours | sentence-transformers | abs diff |\n| --- | --- | --- | --- |")
worst = 0.0
for d in (384, 64, 32):  # the full width and the two smallest prefixes (each is a full encode)
    st = SentenceTransformer(str(export), device="cpu", truncate_dim=d)
    a = st.encode(left, convert_to_tensor=True, batch_size=128)
    b = st.encode(right, convert_to_tensor=True, batch_size=128)
    assert a.shape[1] == d
    theirs = spearman_by_dim(a, b, gold, [d])[d]
    worst = max(worst, abs(theirs - our_scores[d]))
    print(f"| {d} | {our_scores[d]:.6f} | {theirs:.6f} | {abs(theirs - our_scores[d]):.1e} |")
print(f"largest difference: {worst:.1e}")
