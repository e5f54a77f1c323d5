"""`neuronatlas view`: a static site over one version of the published table.

    index.html                  every published neuron: sort, filter, text and semantic search,
                                score histogram (assets/index.js over data/index.js)
    neurons/<model>/<L>-<N>-<sign>.html
                                one page per neuron, rendered here: explanation, scores, statistics,
                                lineage, every scored excerpt as two rows of tokens (simulated above
                                real) and the other sampled explanations
    compare/v<A>-v<B>.html      what changed from each earlier version A to this version B
    data/semantic.js            explanation and word embeddings (loaded only when searching by meaning)
    assets/                     the site's own CSS and JavaScript: nothing is fetched from elsewhere

Data reach the pages as `<script src>` files, not fetches, so the site works from file:// as well
as from any static host. Everything that came from the corpus or an LLM is escaped here, or set
as text by the scripts (never as HTML). The site is built in a temporary folder beside `out` and
moved into place whole.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from neuronatlas.adapters.progress import progress
from neuronatlas.adapters.storage import Storage
from neuronatlas.datasets import corpus as corpus_contract
from neuronatlas.errors import InputError
from neuronatlas.version import code_version
from neuronatlas.viewer import semantic
from neuronatlas.viewer.data import SCORE_FIELDS, pages, table_rows
from neuronatlas.viewer.neuron_page import SCORE_LABELS, _e, _fmt, _head, neuron_html

log = logging.getLogger(__name__)

SITE_MARKER = "neuronatlas-site.json"
COMPARED_VERSIONS = 10
"""The site compares its version with each of this many earlier ones."""
INDEX_SCORES = (
    "top_and_random_score",
    "random_only_score",
    "test_score",
    "embedding_auc",
    "detection_auc",
    "fuzzing_auc",
    "rank_score",
)


@dataclass(frozen=True)
class Site:
    out: Path
    version: int
    neurons: int
    pages: int
    compares: list[str]


def page_path(model: str, layer: int, neuron: int, sign: str) -> str:
    return f"neurons/{corpus_contract.slug(model)}/{layer}-{neuron}-{sign}.html"


def build(root: str, out: str, version: int | None = None, embed: bool = True) -> Site:
    """Build the site for `version` (default: the latest) of the table under `root` into `out`."""
    target = Path(out).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise InputError(f"--out {out}: is a file; name a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / SITE_MARKER).is_file():
        raise InputError(f"--out {out}: folder is not empty and holds no neuronatlas site; name a new folder")
    if not target.parent.is_dir():
        raise InputError(f"--out {out}: folder {target.parent} does not exist")
    chosen, rows_table = table_rows(root, version)
    rows = rows_table.to_pylist()
    if not rows:
        raise InputError(f"version {chosen} of the published table under {root} has no rows: nothing to view")
    _remove_abandoned(target)
    staging = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        staging.mkdir()
        storage = Storage.open(root)
        with progress("neuron pages", len(rows), log, unit="pages", rate_unit="pages") as update:
            written = 0
            for page in pages(storage, rows):
                path = staging / page_path(*page.key)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(neuron_html(page, chosen), encoding="utf-8")
                written += 1
                update(written, written)
        compares = [
            name
            for earlier in range(max(chosen - COMPARED_VERSIONS, 0), chosen)
            if (name := compare_page(staging, root, earlier, chosen, rows_table))
        ]
        if embed:
            _write_semantic(staging, rows)
        write_index(staging, index_data(rows, chosen, shown_root(root), compares, embed))
        (staging / SITE_MARKER).write_text(
            json.dumps(
                {
                    "version": chosen,
                    "root": shown_root(root),
                    "neurons": len(rows),
                    "built_at": _now(),
                    "code": code_version(),
                },
                indent=2,
            )
        )
        previous = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.old")
        if target.exists():
            target.rename(previous)  # the old site stays whole until the new one is in place
        staging.rename(target)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Site(target, chosen, len(rows), written, compares)


def shown_root(root: str) -> str:
    """The root as a published site names it: an `s3://` address as it is (it never holds
    credentials), a local folder by its name only (the site travels; the builder's paths stay)."""
    return root if "://" in root else Path(root).expanduser().resolve().name


def _remove_abandoned(target: Path) -> None:
    """Staging and old copies of `target` left by a build that was killed (its process is gone);
    a build still running keeps its own."""
    if not target.parent.is_dir():
        return
    for left in target.parent.iterdir():
        parts = left.name.rsplit(".", 3)
        if len(parts) != 4 or parts[0] != f".{target.name}" or parts[3] not in ("tmp", "old"):
            continue
        if parts[1].isdigit() and not _alive(int(parts[1])):
            shutil.rmtree(left, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_index(site: Path, index: dict[str, Any]) -> None:
    """The index page, its data (`index_data`) and the site's assets, into `site`."""
    _copy_assets(site)
    write_script(site / "data" / "index.js", "NA_INDEX", index)
    (site / "index.html").write_text(INDEX_HTML, encoding="utf-8")


def _copy_assets(site: Path) -> None:
    (site / "assets").mkdir()
    for name in ("style.css", "index.js", "neuron.js"):
        (site / "assets" / name).write_bytes(
            resources.files("neuronatlas.viewer").joinpath("assets", name).read_bytes()
        )


def write_script(path: Path, name: str, value: Any) -> None:
    """Data as a script that sets `window[name]`: a <script src> loads it from file:// too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"window.{name} = {json.dumps(value, separators=(',', ':'), allow_nan=False)};\n")


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), 4)


def index_data(rows: list[dict[str, Any]], version: int, root: str, compares: list[str], embed: bool) -> dict:
    """The index as columns (one array per field): about 120 bytes a neuron, parsed at once."""
    models = sorted({row["model"] for row in rows})
    signs = sorted({row["sign"] for row in rows})
    model_index = {model: i for i, model in enumerate(models)}
    sign_index = {sign: i for i, sign in enumerate(signs)}
    present = [name for name in INDEX_SCORES if any(_number(row[name]) is not None for row in rows)]
    return {
        "version": version,
        "root": root,
        "built_at": _now(),
        "rows": len(rows),
        "models": models,
        "model_slugs": [corpus_contract.slug(model) for model in models],
        "signs": signs,
        "scores": present,
        "score_labels": {name: SCORE_LABELS[name] for name in present},
        "semantic": embed,
        "compares": compares,
        "columns": {
            "model": [model_index[row["model"]] for row in rows],
            "layer": [row["layer"] for row in rows],
            "neuron": [row["neuron"] for row in rows],
            "sign": [sign_index[row["sign"]] for row in rows],
            "explanation": [row["explanation"] for row in rows],
            **{name: [_number(row[name]) for row in rows] for name in present},
        },
    }


def _write_semantic(site: Path, rows: list[dict[str, Any]]) -> None:
    from neuronatlas.adapters.embedding import Encoder

    encoder = Encoder()
    words, word_vectors = semantic.word_vectors(encoder)
    explanations = [row["explanation"] for row in rows]
    neuron_vectors = encoder.encode(explanations)
    extra = semantic.new_words(explanations, words)  # the explanations' own words, when the vocabulary lacks them
    if extra:
        words = words + extra
        word_vectors = np.concatenate([word_vectors, semantic.quantise(encoder.encode(extra))])
    write_script(
        site / "data" / "semantic.js",
        "NA_SEMANTIC",
        {
            "model": encoder.id,
            "dim": int(neuron_vectors.shape[1]),
            "scale": semantic.SCALE,
            "neurons": semantic.encode_base64(neuron_vectors),
            "words": words,
            "word_vectors": base64.b64encode(word_vectors.tobytes()).decode("ascii"),
        },
    )


# ---- version compare ----------------------------------------------------------------------------

COMPARED = ("explanation", "explanation_id", "top_and_random_score", "embedding_auc", "rank_score", "publish_id")


def changes(before: pa.Table, after: pa.Table) -> list[dict[str, Any]]:
    """Rows whose best explanation or any score differs between two versions, and rows only one
    version has; each with both sides."""
    key = ("model", "layer", "neuron", "sign")
    old = {tuple(r[k] for k in key): r for r in before.to_pylist()}
    new = {tuple(r[k] for k in key): r for r in after.to_pylist()}
    result = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a is not None and b is not None:
            differs = a["explanation"] != b["explanation"] or a["explanation_id"] != b["explanation_id"]
            scores = [name for name in (*SCORE_FIELDS, "rank_score") if _number(a[name]) != _number(b[name])]
            if not differs and not scores:
                continue
            status = "explanation changed" if differs else "score changed"
        else:
            status = "new" if a is None else "removed"
        result.append({"key": k, "status": status, "before": a, "after": b})
    return result


def compare_page(site: Path, root: str, before: int, after: int, new: pa.Table) -> str | None:
    """Write compare/v<before>-v<after>.html (`new`: the rows of `after`); None when the earlier
    version has no rows."""
    _, old = table_rows(root, before)
    if old.num_rows == 0:
        return None
    changed = changes(old, new)
    name = f"compare/v{before}-v{after}.html"
    lines = []
    for change in changed:
        a, b = change["before"] or {}, change["after"] or {}
        model, layer, neuron, sign = change["key"]
        link = page_path(model, layer, neuron, sign)
        cells = [
            f'<td><a href="../{link}">{_e(model)} {layer}:{neuron}</a> {_e(sign)}</td>'
            if b
            else f"<td>{_e(model)} {layer}:{neuron} {_e(sign)}</td>",
            f"<td>{_e(change['status'])}</td>",
            f'<td class="before">{_e(a.get("explanation", ""))}</td>',
            f'<td class="after">{_e(b.get("explanation", ""))}</td>',
            *(f"<td>{_fmt(a.get(n))}</td><td>{_fmt(b.get(n))}</td>" for n in ("top_and_random_score", "rank_score")),
            f"<td>{_e(a.get('publish_id', ''))}</td><td>{_e(b.get('publish_id', ''))}</td>",
        ]
        lines.append(f'<tr class="change">{"".join(cells)}</tr>')
    body = (
        _head(f"neuronatlas: version {before} → {after}", 1) + f"<main><h1>Version {before} → version {after}</h1>"
        f"<p>{len(changed)} of {new.num_rows} neurons changed their best explanation or a score "
        f"({old.num_rows} rows before).</p>"
        '<table class="compare"><tr><th>neuron</th><th>change</th>'
        f"<th>explanation v{before}</th><th>explanation v{after}</th><th>top-and-random v{before}</th>"
        f"<th>v{after}</th><th>rank score v{before}</th><th>v{after}</th><th>publish v{before}</th>"
        f"<th>v{after}</th></tr>{''.join(lines)}</table></main></body></html>\n"
    )
    (site / "compare").mkdir(exist_ok=True)
    (site / name).write_text(body, encoding="utf-8")
    return name


INDEX_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>neuronatlas</title>
<link rel="stylesheet" href="assets/style.css"></head>
<body>
<nav><a href="index.html">neuronatlas</a> <span id="meta"></span> <span id="compares"></span></nav>
<main>
<form id="filters" autocomplete="off">
  <label>model <select id="model"><option value="">all</option></select></label>
  <label>sign <select id="sign"><option value="">all</option></select></label>
  <label>layers <input id="layer-min" type="number" min="0" placeholder="from"> –
    <input id="layer-max" type="number" min="0" placeholder="to"></label>
  <label>score <select id="score-column"></select></label>
  <label>≥ <input id="score-min" type="number" step="0.05" placeholder="min"></label>
  <label>text <input id="text" type="search" placeholder="words in the explanation"></label>
  <label>meaning <input id="semantic" type="search" placeholder="e.g. neurons about sports"></label>
  <button id="semantic-go" type="submit">search by meaning</button>
  <button id="reset" type="button">reset</button>
</form>
<p id="status"></p>
<div id="histogram"></div>
<table id="neurons"><thead><tr>
  <th data-sort="model">model</th><th data-sort="layer">layer</th><th data-sort="neuron">neuron</th>
  <th data-sort="sign">sign</th><th data-sort="explanation">explanation</th>
</tr></thead><tbody></tbody></table>
<div id="pager"><button id="prev" type="button">previous</button> <span id="page"></span>
<button id="next" type="button">next</button></div>
</main>
<script src="data/index.js"></script>
<script src="assets/index.js"></script>
</body></html>
"""
