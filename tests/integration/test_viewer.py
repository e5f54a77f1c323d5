"""The neuron viewer over a real atlas (real Prefect run, the shipped subject model, a real Delta
table with two versions), driven in headless Chromium (Debian's, through Playwright): pages load
with no console errors, sorting, filters and both kinds of search work, a neuron page's rows
hold the values of the simulations dataset, the version compare lists what changed, and text from
the corpus or an LLM never runs as HTML. Screenshots go to test-artifacts/viewer/."""

import json
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from neuronatlas.adapters.delta import DeltaLocation
from neuronatlas.adapters.storage import Storage
from neuronatlas.datasets import explanations as contract
from neuronatlas.datasets import published
from neuronatlas.viewer import site as viewer_site
from neuronatlas.viewer.data import Excerpt, NeuronPage
from tests.flows.test_atlas_flow import run_atlas
from tests.integration.test_cli_bad_input import run_cli
from tests.support import small_jsonl_corpus

CHROMIUM = os.environ.get("NEURONATLAS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "viewer"
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> & "quotes"'


@dataclass
class Atlas:
    root: str
    site: Path
    rows: list[dict[str, Any]]
    """Version 2's rows, as the table holds them."""
    changed: dict[tuple[int, int], str]
    """(layer, neuron) -> what version 2 changed."""


def _second_version(root: str) -> dict[tuple[int, int], str]:
    """Version 2: one row gets a new explanation (an LLM's answer holding HTML and script), one a
    new score; the rest stay as they were."""
    location = DeltaLocation(Storage.open(root), published.TABLE_PATH)
    rows = location.read(None, published.SCHEMA).sort_by([("layer", "ascending"), ("neuron", "ascending")])
    first, second = rows.slice(0, 1).to_pylist()[0], rows.slice(1, 1).to_pylist()[0]
    first["explanation"] = HOSTILE
    second["top_and_random_score"] = 0.987
    location.merge(
        pa.Table.from_pylist([first, second], schema=published.SCHEMA),
        published.KEY,
        "true",
        {published.PUBLISH_KEY: "p-test-edit"},
    )
    return {
        (first["layer"], first["neuron"]): "explanation changed",
        (second["layer"], second["neuron"]): "score changed",
    }


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory) -> Atlas:
    folder = tmp_path_factory.mktemp("viewer")
    root = str(folder / "atlas")
    run_atlas(root, str(small_jsonl_corpus(folder / "wiki300.jsonl")))
    changed = _second_version(root)
    result = run_cli("view", "--root", root, "--out", str(folder / "site"))
    assert result.returncode == 0, result.stderr
    assert "table version 2" in result.stdout and "1 version comparisons" in result.stdout
    rows = DeltaLocation(Storage.open(root), published.TABLE_PATH).read(None, published.SCHEMA).to_pylist()
    return Atlas(root, folder / "site", rows, changed)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM}: no Chromium here (apt-get install chromium, as .ci/run does)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Page:
    """A browser tab that records console errors, page errors and dialogs (an alert is a script
    that ran)."""

    def __init__(self, browser: Any) -> None:
        self.tab = browser.new_page(viewport={"width": 1300, "height": 900})
        self.problems: list[str] = []
        self.tab.on("console", lambda m: m.type in {"error", "warning"} and self.problems.append(f"{m.type}: {m.text}"))
        self.tab.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.tab.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))

    def open_index(self, url: str) -> Any:
        self.tab.goto(url)
        self.tab.wait_for_selector("body[data-ready='1']")
        return self.tab

    def rows(self) -> list[dict[str, str]]:
        return self.tab.eval_on_selector_all(
            "#neurons tbody tr",
            "rows => rows.map(r => ({layer: r.children[1].textContent, neuron: r.children[2].textContent,"
            " explanation: r.children[4].textContent}))",
        )

    def shot(self, name: str) -> None:
        self.tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        pwned = self.tab.evaluate("window.__pwned")
        self.tab.close()
        assert pwned is None, "a script from the data ran"
        assert not self.problems, self.problems


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    tab = Page(browser)
    yield tab
    tab.close()


def _key(row: dict[str, Any]) -> tuple[int, int]:
    return int(row["layer"]), int(row["neuron"])


def test_the_index_lists_every_neuron_and_sorts_and_filters(atlas: Atlas, page: Page) -> None:
    tab = page.open_index(atlas.site.joinpath("index.html").as_uri())
    page.shot("index")
    assert {_key(r) for r in page.rows()} == {_key(r) for r in atlas.rows}
    assert tab.inner_text("#status").startswith(f"{len(atlas.rows)} of {len(atlas.rows)} neurons")
    # default: best top-and-random score first, neurons without one last
    by_score = sorted(
        atlas.rows, key=lambda r: (r["top_and_random_score"] is None, -(r["top_and_random_score"] or 0), _key(r))
    )
    assert [_key(r) for r in page.rows()] == [_key(r) for r in by_score]
    # sort by layer, then the other way
    tab.click("#neurons th[data-sort=layer]")
    assert [_key(r) for r in page.rows()] == sorted(_key(r) for r in atlas.rows)
    tab.click("#neurons th[data-sort=layer]")
    assert [int(r["layer"]) for r in page.rows()] == sorted((r["layer"] for r in atlas.rows), reverse=True)
    # layer filter, then a minimum score on top of it
    tab.fill("#layer-min", "2")
    assert {_key(r) for r in page.rows()} == {_key(r) for r in atlas.rows if r["layer"] >= 2}
    tab.fill("#score-min", "0.4")
    wanted = {_key(r) for r in atlas.rows if r["layer"] >= 2 and (r["top_and_random_score"] or -1) >= 0.4}
    assert {_key(r) for r in page.rows()} == wanted
    page.shot("index-filtered")
    # text search (every word, case-insensitive) replaces nothing else: reset first
    tab.click("#reset")
    word = re.findall(r"[a-z]{3,}", atlas.rows[-1]["explanation"].lower())[-1]
    tab.fill("#text", word.upper())
    assert {_key(r) for r in page.rows()} == {_key(r) for r in atlas.rows if word in r["explanation"].lower()}
    # the histogram counts the neurons shown
    counts = tab.eval_on_selector_all("#histogram rect", "rects => rects.map(r => Number(r.dataset.count))")
    shown = sum(1 for r in atlas.rows if word in r["explanation"].lower() and r["top_and_random_score"] is not None)
    assert len(counts) == 20 and sum(counts) == shown


def _distinct_word(atlas: Atlas) -> tuple[str, tuple[int, int]]:
    """A word that only one explanation has (the scripted explainer names each neuron's token)."""
    for row in sorted(atlas.rows, key=_key):
        if row["explanation"] == HOSTILE:
            continue
        for word in re.findall(r"[a-z]{4,}", row["explanation"].lower()):
            if word not in {"token"} and sum(word in r["explanation"].lower() for r in atlas.rows) == 1:
                return word, _key(row)
    raise AssertionError("no explanation has a word of its own")


def test_semantic_search_from_file_and_from_the_server(atlas: Atlas, page: Page) -> None:
    from neuronatlas.viewer.serve import server

    word, expected = _distinct_word(atlas)
    tab = page.open_index(atlas.site.joinpath("index.html").as_uri())
    tab.fill("#semantic", f"neurons about {word}")
    tab.click("#semantic-go")
    tab.wait_for_function("window.NA_LAST_SEMANTIC_MS !== undefined")
    assert "mean of word vectors" in tab.inner_text("#status")
    assert _key(page.rows()[0]) == expected
    page.shot("semantic-static")

    httpd = server(atlas.site, 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        tab = page.open_index(f"{base}/index.html")
        tab.fill("#semantic", f"neurons about {word}")
        tab.click("#semantic-go")
        tab.wait_for_function("window.NA_LAST_SEMANTIC_MS !== undefined")
        assert "embedded by the server" in tab.inner_text("#status")
        assert _key(page.rows()[0]) == expected
        similarities = [float(x) for x in tab.eval_on_selector_all("td.similarity", "c => c.map(x => x.textContent)")]
        assert similarities == sorted(similarities, reverse=True)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/embed?q=", timeout=30)
        assert refused.value.code == 400
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_neuron_page_shows_the_simulations_datasets_values(atlas: Atlas, page: Page) -> None:
    row = max((r for r in atlas.rows if r["top_and_random_score"] is not None), key=lambda r: r["top_and_random_score"])
    storage = Storage.open(atlas.root)
    simulations = storage.read_parquet(
        f"{contract.simulations_path(row['scores_run'])}/layer={row['layer']}", schema=contract.SIMULATIONS_SCHEMA
    )
    wanted = pc.and_(
        pc.equal(simulations["neuron"], row["neuron"]), pc.equal(simulations["explanation_id"], row["explanation_id"])
    )
    expected = {s["sequence_id"]: s for s in simulations.filter(wanted).to_pylist()}
    tab = page.open_index(atlas.site.joinpath("index.html").as_uri())
    tab.click(f"#neurons tbody tr a[href$='/{row['layer']}-{row['neuron']}-positive.html']")
    tab.wait_for_selector("main.neuron")
    assert tab.inner_text("p.explanation") == row["explanation"]
    assert tab.inner_text("tr[data-score=top_and_random_score] td") == f"{row['top_and_random_score']:.3f}"
    shown = tab.eval_on_selector_all(
        ".excerpt",
        """blocks => blocks.map(b => ({
            sequence: b.dataset.sequence, kind: b.dataset.kind, split: b.dataset.split,
            simulated: [...b.querySelectorAll('.row.simulated .t')].map(t => Number(t.dataset.v)),
            real: [...b.querySelectorAll('.row.real .t')].map(t => Number(t.dataset.v)),
            tokens: [...b.querySelectorAll('.row.real .t')].map(t => t.textContent)}))""",
    )
    assert {int(b["sequence"]) for b in shown} == set(expected) and len(shown) == len(expected)
    assert {b["kind"] for b in shown} == {"top", "random"}
    for block in shown:
        record = expected[int(block["sequence"])]
        assert (block["kind"], block["split"]) == (record["kind"], record["split"])
        assert block["real"] == pytest.approx(record["true_activations"], rel=1e-5, abs=1e-6)
        assert block["simulated"] == pytest.approx(record["simulated_activations"], rel=1e-5, abs=1e-6)
        assert len(block["tokens"]) == len(record["true_activations"])
    # hover: the readout names the token's two values
    tab.hover(".excerpt >> nth=0 >> .row.real .t >> nth=2")
    readout = tab.inner_text("#readout")
    first = shown[0]
    assert f"real {tab.eval_on_selector('.excerpt .row.real .t:nth-child(3)', 't => t.dataset.v')}" in readout
    assert "simulated" in readout and first["tokens"][2].replace("\n", "↵") in readout
    # the other samples, statistics and lineage
    samples = tab.eval_on_selector_all("table.samples tr", "r => r.length")
    assert samples == 1 + 3  # header + every sample of the neuron (samples=3)
    headers = tab.eval_on_selector_all("table.samples th", "h => h.map(x => x.textContent)")
    assert headers[2:5] == ["top-and-random", "embedding AUC", "fuzzing AUC"]  # the default scorers' columns
    assert "frac_positive" in tab.inner_text("main") and row["activations_run"] in tab.inner_text("ul.lineage")
    page.shot("neuron")


def test_the_version_compare_lists_what_changed_with_both_sides(atlas: Atlas, page: Page) -> None:
    tab = page.tab
    tab.goto(atlas.site.joinpath("compare", "v1-v2.html").as_uri())
    changes = tab.eval_on_selector_all(
        "tr.change",
        "rows => rows.map(r => [...r.children].map(c => c.textContent))",
    )
    found = {tuple(int(x) for x in re.search(r"(\d+):(\d+)", c[0]).groups()): c for c in changes}  # type: ignore[union-attr]
    assert {k: c[1] for k, c in found.items()} == atlas.changed
    for key, cells in found.items():
        before, after = cells[2], cells[3]
        if atlas.changed[key] == "explanation changed":
            assert after == HOSTILE and before != HOSTILE
        else:
            assert before == after and cells[5] == "0.987" and cells[4] != "0.987"
    page.shot("compare")


def test_untrusted_text_renders_as_text_and_runs_nothing(atlas: Atlas, page: Page, tmp_path: Path) -> None:
    """An LLM answer (version 2's explanation) and corpus tokens holding HTML and script."""
    tab = page.open_index(atlas.site.joinpath("index.html").as_uri())
    tab.fill("#text", "onerror")
    assert [r["explanation"] for r in page.rows()] == [HOSTILE]
    tab.click("#neurons tbody tr a")
    tab.wait_for_selector("main.neuron")
    assert tab.inner_text("p.explanation") == HOSTILE
    assert tab.eval_on_selector_all("main img, main script", "x => x.length") == 0
    # a page whose excerpt tokens are hostile, rendered the same way the site renders every page
    row = next(r for r in atlas.rows if r["explanation"] == HOSTILE)
    tokens = ("<script>", "window.__pwned=3", "</script>", "<img src=x onerror=window.__pwned=4>", "\n", "&amp;")
    excerpt = Excerpt("top", "valid", 1, tokens, (1.0, 0.5, 0.0, 2.0, 0.1, 0.2), (3.0, 1.0, 0.0, 9.0, 0.0, 1.0))
    site = tmp_path / "site"
    shutil.copytree(atlas.site / "assets", site / "assets")
    target = site / "neurons" / "m" / "hostile.html"
    target.parent.mkdir(parents=True)
    target.write_text(viewer_site.neuron_html(NeuronPage(row, excerpts=[excerpt], simulated=True), 2))
    tab.goto(target.as_uri())
    assert tab.eval_on_selector_all(".row.real .t", "t => t.map(x => x.textContent)") == [*tokens[:4], "↵", "&amp;"]
    assert tab.eval_on_selector_all("main img, main script", "x => x.length") == 0
    page.shot("hostile")


def test_show_prints_a_neuron_in_the_terminal(atlas: Atlas) -> None:
    row = next(r for r in atlas.rows if r["top_and_random_score"] is not None and r["explanation"] != HOSTILE)
    result = run_cli("show", f"{row['layer']}:{row['neuron']}", "--root", atlas.root, "--excerpts", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == row["explanation"]
    assert re.search(rf"^top-and-random +{row['top_and_random_score']:.3f} ", result.stdout, re.MULTILINE)
    rows = [line.split(maxsplit=1)[0] for line in lines if line.lstrip().startswith(("simulated ", "real "))]
    assert rows[:2] == ["simulated", "real"] and rows.count("simulated") == rows.count("real")
    assert "more excerpts: --excerpts 0 shows all" in result.stdout
    # on a colour terminal, tokens are shaded (24-bit background colours)
    coloured = run_cli(
        "show",
        f"{row['layer']}:{row['neuron']}",
        "--root",
        atlas.root,
        env={"FORCE_COLOR": "1", "COLORTERM": "truecolor"},
    )
    assert re.search(r"\x1b\[[0-9;]*48;2;\d+;\d+;\d+", coloured.stdout)
    # the hostile explanation's control-free HTML prints as it is; a bad neuron is one line
    missing = run_cli("show", "99:99999", "--root", atlas.root)
    assert (
        missing.returncode == 2
        and missing.stderr.strip() == "error: 99:99999 (positive): not in version 2 of the table"
    )


def test_view_refuses_bad_input_and_writes_nothing(atlas: Atlas, tmp_path: Path) -> None:
    stray = tmp_path / "notes"
    stray.mkdir()
    (stray / "keep.txt").write_text("mine")
    cases = {
        "a folder of other files": (["--out", str(stray)], "folder is not empty and holds no neuronatlas site"),
        "a file": (["--out", str(stray / "keep.txt")], "is a file; name a folder"),
        "no such version": (["--out", str(tmp_path / "s"), "--version", "9"], "version 9"),
        "no table": (["--out", str(tmp_path / "s"), "--root", str(tmp_path / "empty")], "nothing published yet"),
    }
    for name, (arguments, message) in cases.items():
        result = run_cli("view", "--root", atlas.root, *arguments)
        assert result.returncode == 2, name
        assert message in result.stderr and "Traceback" not in result.stderr, (name, result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]  # no site, no staging folder
    assert [p.name for p in stray.iterdir()] == ["keep.txt"]
    # rebuilding over a site replaces it whole (version 1 now)
    copy = tmp_path / "site"
    shutil.copytree(atlas.site, copy)
    again = run_cli("view", "--root", atlas.root, "--version", "1", "--out", str(copy), "--no-embed")
    assert again.returncode == 0, again.stderr
    marker = json.loads((copy / viewer_site.SITE_MARKER).read_text())
    assert marker["version"] == 1 and not (copy / "data" / "semantic.js").exists()
    assert not (copy / "compare").exists()  # version 0 is the empty table: nothing to compare


def test_a_killed_views_staging_is_cleared_by_the_next(atlas: Atlas, tmp_path: Path) -> None:
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process has now: the view that made these folders was killed
    abandoned = [tmp_path / f".site.{gone.pid}.{'a' * 32}.tmp", tmp_path / f".site.{gone.pid}.{'b' * 32}.old"]
    running = tmp_path / f".site.{os.getpid()}.{'c' * 32}.tmp"  # a build still under way keeps its own
    other = tmp_path / f".other.{gone.pid}.{'d' * 32}.tmp"
    for folder in [*abandoned, running, other]:
        (folder / "neurons").mkdir(parents=True)
    result = run_cli("view", "--root", atlas.root, "--out", str(tmp_path / "site"), "--no-embed")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, other.name, "site"])


def test_the_site_holds_no_path_of_the_machine_that_built_it_and_no_raw_control_bytes(atlas: Atlas) -> None:
    builder = str(Path(atlas.root).parent).encode()
    for file in atlas.site.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            assert builder not in data, file
            assert b"\x1b" not in data and b"\x00" not in data, file
    marker = json.loads((atlas.site / viewer_site.SITE_MARKER).read_text())
    assert marker["root"] == "atlas"
    row = {**atlas.rows[0], "explanation": "red \x1b[31mtext\x1b[0m and a bell\x07"}
    page = viewer_site.neuron_html(NeuronPage(row, excerpts=[], simulated=False), 2)
    assert "\x1b" not in page and "\x07" not in page
    assert "red \\x1b[31mtext\\x1b[0m and a bell\\x07" in page


def test_a_run_that_did_not_simulate_shows_held_out_records(atlas: Atlas, tmp_path: Path) -> None:
    """A score run of excerpt scorers only has no simulations: its pages show the real
    activations of the neuron's valid and test records, from the activations dataset."""
    from neuronatlas.datasets import activations as activations_contract
    from neuronatlas.viewer import data

    root = tmp_path / "atlas"
    shutil.copytree(atlas.root, root)
    row = next(r for r in atlas.rows if r["explanation"] != HOSTILE)
    shutil.rmtree(root / contract.simulations_path(row["scores_run"]))
    [page] = data.pages(Storage.open(str(root)), [row])
    assert not page.simulated and all(e.simulated is None for e in page.excerpts)
    records = Storage.open(str(root)).read_parquet(
        activations_contract.layer_partition(f"activations/smollm2-135m/{row['activations_run']}", row["layer"])
    )
    held_out = [
        r
        for r in records.to_pylist()
        if r["neuron"] == row["neuron"] and r["kind"] in {"top", "random"} and r["split"] in {"valid", "test"}
    ]
    assert sorted((e.kind, e.sequence_id) for e in page.excerpts) == sorted(
        (r["kind"], r["sequence_id"]) for r in held_out
    )
    by_sequence = {r["sequence_id"]: r["activations"] for r in held_out}
    for excerpt in page.excerpts:
        assert excerpt.real == pytest.approx(by_sequence[excerpt.sequence_id])
        assert len(excerpt.tokens) == len(excerpt.real)
    html = viewer_site.neuron_html(page, 2)
    assert "did not simulate" in html and 'class="row simulated' not in html


def test_model_and_sign_filters_on_a_table_of_two_models(browser: Any, tmp_path: Path) -> None:
    """The index as `view` writes it, over rows of two models and both signs."""
    rows = [
        {
            "model": model,
            "layer": layer,
            "neuron": neuron,
            "sign": sign,
            "explanation": f"{model} {sign} {layer}:{neuron}",
            **{name: (layer + neuron) / 100 for name in viewer_site.INDEX_SCORES},
        }
        for model in ("gemma3-270m", "smollm2-135m")
        for sign in ("negative", "positive")
        for layer in range(3)
        for neuron in range(4)
    ]
    viewer_site.write_index(tmp_path, viewer_site.index_data(rows, 1, "test", [], embed=False))
    page = Page(browser)
    try:
        tab = page.open_index((tmp_path / "index.html").as_uri())
        tab.select_option("#model", label="smollm2-135m")
        tab.select_option("#sign", label="negative")
        shown = tab.eval_on_selector_all("#neurons tbody tr", "r => r.map(x => x.children[4].textContent)")
        assert sorted(shown) == sorted(
            r["explanation"] for r in rows if r["model"] == "smollm2-135m" and r["sign"] == "negative"
        )
        # a link names the neuron's own page, by model slug
        href = tab.get_attribute("#neurons tbody tr a", "href")
        assert re.fullmatch(r"neurons/smollm2-135m/\d+-\d+-negative\.html", href or "")
        # the filters are in the URL: a reload shows the same view
        tab.reload()
        tab.wait_for_selector("body[data-ready='1']")
        assert tab.input_value("#model") == "1" and tab.input_value("#sign") == "0"
        assert len(page.rows()) == len(shown)
        # semantic search on a site built without embeddings says so
        tab.fill("#semantic", "anything")
        tab.click("#semantic-go")
        tab.wait_for_function("document.getElementById('status').textContent.includes('--no-embed')")
    finally:
        page.close()


def test_view_serve_on_the_command_line(atlas: Atlas, tmp_path: Path) -> None:
    import subprocess

    from tests.integration.test_cli_bad_input import COMMAND
    from tests.support import free_port

    port = free_port()
    process = subprocess.Popen(
        [
            COMMAND,
            "view",
            "--root",
            atlas.root,
            "--out",
            str(tmp_path / "site"),
            "--no-embed",
            "--serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("serving on"):
                break
        assert lines[-1].strip() == f"serving on http://127.0.0.1:{port}/ (Ctrl-C stops)", lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=30) as answer:
            assert b'<script src="data/index.js">' in answer.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/embed?q=sports", timeout=120) as answer:
            assert len(json.load(answer)["vector"]) == 384
    finally:
        process.terminate()
        process.wait(timeout=30)
