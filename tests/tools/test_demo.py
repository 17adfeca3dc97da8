"""The demo: exact search at full width, one-line errors, and the page in a headless Chromium."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mrl.tools.demo import Searcher, main

CHROMIUM = Path("/usr/bin/chromium")


def test_full_width_is_exact_and_bytes_follow_the_dim():
    rng = np.random.default_rng(0)
    docs = (rng.normal(size=(200, 32)) / np.sqrt(1 + np.arange(32))).astype(np.float32)
    searcher = Searcher(docs, [32, 16, 8, 4])
    for query in docs[:5] + 0.1 * rng.normal(size=(5, 32)).astype(np.float32):
        full = searcher.search(query, 32)
        assert full["recall"] == 1.0 and full["bytes"] == 128 and len(full["hits"]) == 10
        assert all(h["exact"] for h in full["hits"])
        small = searcher.search(query, 4)
        assert small["bytes"] == 16 and 0 <= small["recall"] <= 1 and small["ms"] >= 0
    with pytest.raises(ValueError, match="not one of the model's dims"):
        searcher.search(docs[0], 12)


def test_empty_corpus_and_missing_data_dir_are_one_line(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["any-model", "--corpus", str(empty)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds no texts" in err and err.count("\n") == 1
    monkeypatch.delenv("MRL_DATA_DIR", raising=False)
    with pytest.raises(SystemExit):
        main(["any-model"])
    assert "set MRL_DATA_DIR" in capsys.readouterr().err


def test_bad_dims_and_models_are_one_line(tiny_model, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a dog", "a cat"]))
    for args, message in [(["--dims", "64"], "--dims holds 64, larger than"),
                          (["--dims", "8", "8"], "--dims repeats [8]")]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main([str(tiny_model), "--corpus", str(corpus), *args])
        errors = [line for line in capsys.readouterr().err.splitlines() if "error: " in line]
        assert exit_info.value.code == 2 and len(errors) == 1 and message in errors[0]
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nothing-here"), "--corpus", str(corpus)])
    assert exit_info.value.code == 2 and "nothing-here' is not a folder" in capsys.readouterr().err


def _start(folder: Path, corpus: Path, cache: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """Start the demo on a free port; return the process and its URL once it is serving."""
    command = [sys.executable, "-m", "mrl.demo", str(folder), "--corpus", str(corpus),
               "--port", "0", "--cache-dir", str(cache)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = re.search(r"http://\S+/", log.read_text())
        if found:
            return proc, found.group(0)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"the demo did not start:\n{log.read_text()}")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_page_searches_and_the_slider_changes_dims_in_a_browser(tiny_model, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    folder = tiny_model
    corpus = tmp_path / "corpus.jsonl"
    subjects = ["A dog", "A cat", "A man", "A woman", "A child", "A bird", "A horse"]
    actions = ["runs in the park.", "sleeps at home.", "plays a guitar.", "swims in a lake.",
               "reads a book.", "eats an apple."]  # fmt: skip
    corpus.write_text("".join(json.dumps({"text": f"{s} {a}"}) + "\n"
                              for s in subjects for a in actions))  # fmt: skip
    cache = tmp_path / "cache"
    proc, url = _start(folder, corpus, cache, tmp_path / "first.log")
    try:
        assert "encoding 42 documents" in (tmp_path / "first.log").read_text()
        assert len(list(cache.glob("*.npz"))) == 1
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
            )
            page = browser.new_page()
            page.goto(url)
            assert page.text_content("#bytes") == "128"
            page.fill("#q", "A man plays a guitar.")
            page.wait_for_function("document.querySelectorAll('#results li').length === 10")
            assert page.text_content("#recall") == "1.00"
            full = page.locator("#results li").all_text_contents()

            page.fill("#dim", "0")  # the smallest dim: 4 of 32
            page.wait_for_function("document.getElementById('bytes').textContent === '16'")
            assert page.text_content("#dims") == "4"
            page.wait_for_function(
                "(full) => JSON.stringify([...document.querySelectorAll('#results li')]"
                ".map(li => li.textContent)) !== JSON.stringify(full)",
                arg=full,
            )
            recall = float(page.text_content("#recall"))
            assert 0 <= recall <= 1
            assert page.locator("#results li.miss").count() == round(10 * (1 - recall))
            browser.close()
    finally:
        proc.kill()
        proc.wait()

    proc, url = _start(folder, corpus, cache, tmp_path / "second.log")
    try:
        log = (tmp_path / "second.log").read_text()
        assert "loaded 42 cached embeddings" in log and "encoding" not in log
    finally:
        proc.kill()
        proc.wait()


def test_the_embedding_cache_goes_under_mrl_output_dir(tiny_model, tmp_path, monkeypatch, capsys):
    import mrl.tools.demo as demo

    class NoServer:  # the cache is written before serving: serve nothing, return at once
        server_address = ("127.0.0.1", 0)

        def __init__(self, *args):
            pass

        def serve_forever(self):
            pass

        def server_close(self):
            pass

    monkeypatch.setattr(demo, "ThreadingHTTPServer", NoServer)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a dog", "a cat"]))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MRL_OUTPUT_DIR", str(tmp_path / "out"))
    main([str(tiny_model), "--corpus", str(corpus)])
    assert len(list((tmp_path / "out" / "demo_cache").glob("*.npz"))) == 1
    main([str(tiny_model), "--corpus", str(corpus)])  # the next start reads it back
    assert "loaded 2 cached embeddings" in capsys.readouterr().out
    monkeypatch.delenv("MRL_OUTPUT_DIR")  # unset: outputs/demo_cache in the working folder
    main([str(tiny_model), "--corpus", str(corpus)])
    assert len(list((tmp_path / "outputs" / "demo_cache").glob("*.npz"))) == 1
    main([str(tiny_model), "--corpus", str(corpus), "--cache-dir", str(tmp_path / "c")])
    assert len(list((tmp_path / "c").glob("*.npz"))) == 1
