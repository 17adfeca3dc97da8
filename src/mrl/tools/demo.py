"""The interactive demo: a local web page to search a corpus at any Matryoshka prefix size.

    python -m mrl.demo MODEL [--corpus FILE.jsonl] [--port 7860] [--host 127.0.0.1]

Type a query, move the slider over the model's dims (`--dims`, else its eval dims: a run's own,
or the pow2 dims of its width down to 1/12)
and see, live: the top 10 documents by cosine on the first `dim` dims (FAISS flat inner product
on the renormalised prefix, as in mrl.retrieval), their recall@10 against full-width search for
this query, the search latency, and the bytes per float32 embedding (4 * dim). MODEL is anything
eval.py takes (Hub id, model folder, run folder). The corpus is `--corpus` (JSON Lines with a
`text` field) or the documents of mrl.retrieval's default corpus under $MRL_DATA_DIR. Its
embeddings are cached in `--cache-dir` (default $MRL_OUTPUT_DIR/demo_cache, else
outputs/demo_cache), keyed by the model path,
the model's output on a probe sentence and the corpus texts, so later starts take seconds.
Standard library server and one page of vanilla JS: no web framework.
"""

from __future__ import annotations

import functools
import hashlib
import html
import io
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np

from mrl.common.cli import OneLineParser
from mrl.common.errors import ConfigError
from mrl.evaluation.retrieval import prefix
from mrl.tools.retrieval import FINAL_K, default_corpus, read_texts

PROBE = "A probe sentence that fingerprints the model for the embedding cache."


class Searcher:
    """One FAISS flat inner-product index per dim over the renormalised document prefixes."""

    def __init__(self, docs: np.ndarray, dims: list[int]):
        import faiss

        self.width, self.dims, self.indexes = docs.shape[1], sorted(dims), {}
        for dim in {*dims, self.width}:
            self.indexes[dim] = faiss.IndexFlatIP(dim)
            self.indexes[dim].add(prefix(docs, dim))

    def search(self, query: np.ndarray, dim: int, k: int = FINAL_K) -> dict:
        """Top `k` at `dim` for one query embedding, with recall@k against full-width search."""
        if dim not in self.indexes:
            raise ConfigError(f"dim={dim} is not one of the model's dims {self.dims}.")
        k = min(k, self.indexes[dim].ntotal)
        start = time.perf_counter()
        scores, ids = self.indexes[dim].search(prefix(query[None], dim), k)
        ms = (time.perf_counter() - start) * 1000
        exact = set(self.indexes[self.width].search(prefix(query[None], self.width), k)[1][0])
        hits = [{"id": int(i), "score": float(s), "exact": int(i) in exact}
                for i, s in zip(ids[0], scores[0], strict=True)]  # fmt: skip
        recall = sum(h["exact"] for h in hits) / k
        return {"dim": dim, "bytes": 4 * dim, "ms": ms, "recall": recall, "hits": hits}


def corpus_embeddings(model, model_name: str, texts: list[str], cache_dir: Path) -> np.ndarray:
    """The corpus encoded by `model`, read from the .npz cache when its key matches."""
    from mrl.artifacts.models import slug
    from mrl.common.files import write_atomic

    probe = np.round(model.encode([PROBE], convert_to_numpy=True), 4).astype(np.float32)
    name = str(Path(model_name).resolve()) if Path(model_name).exists() else model_name
    key = hashlib.sha256(name.encode() + probe.tobytes() + "\0".join(texts).encode())
    path = cache_dir / f"{slug(model_name)[-80:]}-{key.hexdigest()[:16]}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as cached:
                docs = cached["docs"]
        except (OSError, ValueError, KeyError, EOFError) as err:
            raise ConfigError(
                f"the embedding cache {path} does not load ({str(err).splitlines()[0]}); delete "
                "it and the corpus is encoded again."
            ) from None
        if len(docs) == len(texts):
            print(f"loaded {len(texts)} cached embeddings from {path}", flush=True)
            return docs
    start = time.perf_counter()
    print(f"encoding {len(texts)} documents (once; cached for later starts) ...", flush=True)
    docs = model.encode(texts, batch_size=64, convert_to_numpy=True, show_progress_bar=True)
    docs = docs.astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, docs=docs)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())
    print(f"encoded in {time.perf_counter() - start:.0f} s; cached at {path}", flush=True)
    return docs


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Matryoshka search</title><style>
body{font:15px system-ui,sans-serif;max-width:760px;margin:2em auto;color:#222}
#q{width:100%;font-size:17px;padding:.4em} #dim{width:100%} .stats{margin:.6em 0;color:#444}
.stats b{color:#000} li{margin:.25em 0} li.miss{color:#999} .score{color:#888;font-size:12px}
</style></head><body><h2>Matryoshka search</h2>
<p class="stats">__MODEL__: __N__ documents, width __WIDTH__</p>
<input id="q" placeholder="Type a query" autofocus>
<p><input id="dim" type="range" min="0" max="__LAST__" step="1" value="__LAST__"><br>
<span class="score">dims: __TICKS__</span></p>
<p class="stats"><b id="dims"></b> dims &middot; <b id="bytes"></b> bytes/embedding &middot;
recall@10 vs full width <b id="recall">-</b> &middot; search <b id="ms">-</b> ms</p>
<ol id="results"></ol><p class="stats">Grey: not in the full-width top 10.</p>
<script>
const DIMS = __DIMS__, $ = id => document.getElementById(id);
let seq = 0, timer = null;
function show() { const d = DIMS[$("dim").value]; $("dims").textContent = d;
  $("bytes").textContent = 4 * d; return d; }
async function search() {
  const d = show(), q = $("q").value.trim(), mine = ++seq;
  if (!q) { $("results").innerHTML = ""; return; }
  const r = await fetch(`/search?dim=${d}&q=${encodeURIComponent(q)}`), res = await r.json();
  if (mine !== seq) return;  // a newer request is on its way
  if (!r.ok) { $("results").textContent = res.error; return; }
  $("recall").textContent = res.recall.toFixed(2); $("ms").textContent = res.ms.toFixed(2);
  $("results").replaceChildren(...res.hits.map(h => { const li = document.createElement("li");
    li.textContent = h.text + " "; li.className = h.exact ? "hit" : "miss";
    const s = document.createElement("span"); s.className = "score";
    s.textContent = h.score.toFixed(3); li.append(s); return li; }));
}
$("q").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(search, 200); });
$("dim").addEventListener("input", search); show();
</script></body></html>"""


def render_page(model_name: str, n_docs: int, searcher: Searcher) -> str:
    fill = {"__MODEL__": html.escape(model_name), "__N__": str(n_docs),
            "__WIDTH__": str(searcher.width), "__LAST__": str(len(searcher.dims) - 1),
            "__DIMS__": json.dumps(searcher.dims),
            "__TICKS__": " &middot; ".join(map(str, searcher.dims))}  # fmt: skip
    page = PAGE
    for mark, value in fill.items():
        page = page.replace(mark, value)
    return page


def make_handler(model, texts: list[str], searcher: Searcher, page: str):
    lock = threading.Lock()

    @functools.lru_cache(maxsize=256)
    def encode(query: str) -> np.ndarray:
        with lock:
            return model.encode([query], convert_to_numpy=True)[0].astype(np.float32)

    class Handler(BaseHTTPRequestHandler):
        def send(self, status: int, body: str, kind: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (the http.server name)
            url = urlparse(self.path)
            if url.path == "/":
                return self.send(200, page, "text/html")
            if url.path != "/search":
                return self.send(404, json.dumps({"error": "not found"}), "application/json")
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            try:
                dim = int(params.get("dim", searcher.width))
                result = searcher.search(encode(params.get("q", "")), dim)
            except (ConfigError, ValueError) as err:
                return self.send(400, json.dumps({"error": str(err)}), "application/json")
            for hit in result["hits"]:
                hit["text"] = texts[hit["id"]]
            self.send(200, json.dumps(result), "application/json")

        def log_message(self, *args) -> None:  # quiet: one line per keystroke is noise
            pass

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description="Search a corpus live at every prefix size.")
    parser.add_argument("model", help="Hub id, model folder or run folder")
    parser.add_argument("--corpus", type=Path, help="JSON Lines with a text field")
    parser.add_argument("--dims", type=int, nargs="+", help="slider dims (default: eval dims)")
    parser.add_argument("--port", type=int, default=7860, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1)")
    parser.add_argument(
        "--cache-dir", type=Path, default=None,
        help="corpus embeddings cache (default: $MRL_OUTPUT_DIR/demo_cache or outputs/demo_cache)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.cache_dir is None:
        args.cache_dir = Path(os.environ.get("MRL_OUTPUT_DIR") or "outputs") / "demo_cache"
    try:
        if args.corpus:
            texts = read_texts(args.corpus)
        elif os.environ.get("MRL_DATA_DIR"):
            texts = default_corpus()[1]
        else:
            raise ConfigError("set MRL_DATA_DIR (shared/data layout) or give --corpus FILE.jsonl.")
        from mrl.artifacts.models import embedding_width, load_model, model_eval_dims
        from mrl.core.schedule import check_dims

        with tempfile.TemporaryDirectory() as workdir:
            model = load_model(args.model, None, False, Path(workdir))
        width = embedding_width(model)
        if args.dims is None:
            dims = model_eval_dims(args.model, width)
        else:
            dims = check_dims(args.dims, width, "--dims")
        docs = corpus_embeddings(model, args.model, texts, args.cache_dir)
        searcher = Searcher(docs, dims)
        page = render_page(args.model, len(texts), searcher)
        try:
            server = ThreadingHTTPServer(
                (args.host, args.port), make_handler(model, texts, searcher, page)
            )
        except OSError as err:
            raise ConfigError(
                f"cannot serve on {args.host}:{args.port} ({err.strerror}); pick another --port."
            ) from None
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    host, port = server.server_address[:2]
    print(f"demo at http://{host}:{port}/ (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
