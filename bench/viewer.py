"""The viewer's index at scale, in headless Chromium: load and filter times for a synthetic table.

    .venv/bin/python bench/viewer.py [--neurons 50000 5000] [--rounds 3]

For each size, a synthetic published table (random layers, neurons and scores; explanations
made of topic words; random unit vectors standing in for explanation embeddings, real word
vectors for the queries) is turned into the index exactly as `neuronatlas view` writes it
(`site.index_data`, the site's own index.html and scripts), opened from file:// in Debian's
Chromium, and timed from inside the page (performance.now()):

- load: navigation start to the index being ready (data script parsed, columns prepared, first
  page rendered);
- each interaction: the time the page spends filtering, sorting and rendering after the input
  (text search, layer range, minimum score, sort by score, semantic search incl. its dot products).

Each is the median of `rounds` fresh page loads. Target: under 1 s each at 50,000 neurons.
Writes bench/results/viewer.json.
"""

import argparse
import base64
import json
import platform
import random
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from neuronatlas.viewer import semantic
from neuronatlas.viewer import site as viewer_site

RESULTS = Path(__file__).resolve().parent / "results" / "viewer.json"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
TOPICS = (
    "sports football team league", "music album song band", "numbers digits years dates", "punctuation comma",
    "names of people", "cities and countries", "chemistry elements", "the word the", "verbs in past tense",
    "plural nouns", "French words", "code and brackets", "religion and churches", "war battles armies",
)  # fmt: skip
TARGET_MS = 1000.0


def synthetic_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(TOPICS).split()
        words = rng.sample(topic, k=min(len(topic), rng.randint(1, 3)))
        rows.append(
            {
                "model": "smollm2-135m" if i % 5 else "gemma-3-270m",
                "layer": rng.randrange(30),
                "neuron": rng.randrange(1536),
                "sign": "positive" if i % 7 else "negative",
                "explanation": f"{' '.join(words)} #{i}",
                **{
                    name: (None if rng.random() < 0.05 else round(rng.uniform(-0.2, 1.0), 4))
                    for name in viewer_site.INDEX_SCORES
                },
            }
        )
    return rows


def build_site(folder: Path, rows: list[dict[str, Any]], words: list[str], word_vectors: np.ndarray) -> None:
    viewer_site.write_index(folder, viewer_site.index_data(rows, 1, "bench", [], True))
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(rows), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    viewer_site.write_script(
        folder / "data" / "semantic.js",
        "NA_SEMANTIC",
        {
            "model": "random vectors (bench)",
            "dim": 384,
            "scale": semantic.SCALE,
            "neurons": semantic.encode_base64(vectors),
            "words": words,
            "word_vectors": base64.b64encode(word_vectors.tobytes()).decode("ascii"),
        },
    )


def measure(browser: Any, url: str) -> dict[str, float]:
    tab = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(url)
    tab.wait_for_selector("body[data-ready='1']")
    times = {"load": tab.evaluate("window.NA_READY_AT")}

    def apply_ms(action: Any) -> float:
        tab.evaluate("window.NA_LAST_APPLY_MS = undefined")
        action()
        tab.wait_for_function("window.NA_LAST_APPLY_MS !== undefined")
        return float(tab.evaluate("window.NA_LAST_APPLY_MS"))

    times["text search"] = apply_ms(lambda: tab.fill("#text", "music"))
    times["layer range"] = apply_ms(lambda: tab.fill("#layer-min", "10"))
    times["min score"] = apply_ms(lambda: tab.fill("#score-min", "0.5"))
    times["sort by score"] = apply_ms(lambda: tab.click("#neurons th[data-sort=embedding_auc]"))
    times["reset"] = apply_ms(lambda: tab.click("#reset"))
    tab.evaluate("window.NA_LAST_SEMANTIC_MS = undefined")
    tab.fill("#semantic", "neurons about sports")
    tab.click("#semantic-go")
    tab.wait_for_function("window.NA_LAST_SEMANTIC_MS !== undefined", timeout=120_000)
    times["semantic search (first: loads vectors)"] = float(tab.evaluate("window.NA_LAST_SEMANTIC_MS"))
    tab.evaluate("window.NA_LAST_SEMANTIC_MS = undefined")
    tab.fill("#semantic", "music")
    tab.click("#semantic-go")
    tab.wait_for_function("window.NA_LAST_SEMANTIC_MS !== undefined")
    times["semantic search"] = float(tab.evaluate("window.NA_LAST_SEMANTIC_MS"))
    shown = tab.inner_text("#status")
    tab.close()
    if errors:
        raise SystemExit(f"page errors: {errors}")
    times["_status"] = shown  # type: ignore[assignment]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, nargs="+", default=[50_000, 5_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from neuronatlas.adapters.embedding import Encoder

    words, word_vectors = semantic.word_vectors(Encoder())
    results: dict[str, Any] = {
        "machine": platform.platform(),
        "rounds": args.rounds,
        "target_ms": TARGET_MS,
        "sizes": {},
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        results["chromium"] = browser.version
        for n in args.neurons:
            folder = Path(tempfile.mkdtemp(prefix=f"viewer-bench-{n}-"))
            try:
                build_site(folder, synthetic_rows(n), words, word_vectors)
                sizes = {p.name: p.stat().st_size for p in (folder / "data").iterdir()}
                rounds = [measure(browser, (folder / "index.html").as_uri()) for _ in range(args.rounds)]
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            medians = {k: statistics.median(r[k] for r in rounds) for k in rounds[0] if not k.startswith("_")}
            results["sizes"][str(n)] = {"ms": medians, "bytes": sizes, "last_status": rounds[-1]["_status"]}
        browser.close()
    print(f"Chromium {results['chromium']}; median of {args.rounds} page loads; target < {TARGET_MS:.0f} ms")
    header = f"{'':44}" + "".join(f"{n:>12,}" for n in args.neurons)
    print(header + "   (neurons)")
    for key in results["sizes"][str(args.neurons[0])]["ms"]:
        cells = "".join(f"{results['sizes'][str(n)]['ms'][key]:>10.1f}ms" for n in args.neurons)
        ok = results["sizes"][str(args.neurons[0])]["ms"][key] < TARGET_MS
        print(f"{key:44}{cells}   {'ok' if ok else 'OVER TARGET'}")
    for n in args.neurons:
        data = results["sizes"][str(n)]["bytes"]
        index_mb, semantic_mb = data["index.js"] / 1e6, data["semantic.js"] / 1e6
        print(f"{n:,} neurons: data/index.js {index_mb:.1f} MB, data/semantic.js {semantic_mb:.1f} MB")
    worst = max(results["sizes"][str(args.neurons[0])]["ms"].values())
    results["worst_ms_at_largest"] = worst
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"worst at {args.neurons[0]:,}: {worst:.0f} ms ({worst / TARGET_MS:.2f} of the target); wrote {RESULTS}")


if __name__ == "__main__":
    main()
