// neuronatlas index: every published neuron, sortable and filterable; text and semantic search;
// a histogram of the chosen score. Data come from data/index.js (window.NA_INDEX, one array per
// column). Explanations are LLM output and are only ever set as text, never as HTML.
(function () {
  "use strict";
  const started = performance.now();
  const D = window.NA_INDEX;
  const C = D.columns;
  const n = D.rows;
  const PAGE = 100;
  const $ = (id) => document.getElementById(id);

  // numeric columns as Float64Array (null -> NaN), and lower-cased explanations for text search
  const num = {};
  for (const name of D.scores) {
    const values = new Float64Array(n);
    const source = C[name];
    for (let i = 0; i < n; i++) values[i] = source[i] === null ? NaN : source[i];
    num[name] = values;
  }
  const lower = C.explanation.map((s) => s.toLowerCase());
  const modelSlugs = D.model_slugs;
  const pageOf = (i) => `neurons/${modelSlugs[C.model[i]]}/${C.layer[i]}-${C.neuron[i]}-${D.signs[C.sign[i]]}.html`;

  const defaultScore = D.scores.includes("top_and_random_score") ? "top_and_random_score" : D.scores[0] || "";
  const state = {
    model: "", sign: "", layerMin: "", layerMax: "", scoreColumn: defaultScore, scoreMin: "",
    text: "", semantic: "", sort: defaultScore || "layer", dir: -1, page: 0,
  };
  let similarity = null; // Float32Array of cosine similarities to the semantic query, or null
  let similarityMode = "";
  let view = new Int32Array(0);

  // ---- controls ----
  D.models.forEach((m, i) => $("model").add(new Option(m, String(i))));
  D.signs.forEach((s, i) => $("sign").add(new Option(s, String(i))));
  D.scores.forEach((s) => $("score-column").add(new Option(D.score_labels[s], s)));
  const head = document.querySelector("#neurons thead tr");
  for (const s of D.scores) {
    const th = document.createElement("th");
    th.dataset.sort = s;
    th.textContent = D.score_labels[s];
    head.appendChild(th);
  }
  const simHead = document.createElement("th");
  simHead.dataset.sort = "similarity";
  simHead.textContent = "similarity";
  simHead.hidden = true;
  head.appendChild(simHead);
  $("meta").textContent = `table version ${D.version} · ${n.toLocaleString()} neurons · built ${D.built_at}`;
  for (const name of D.compares) {
    const a = document.createElement("a");
    a.href = name;
    a.textContent = name.replace("compare/", "compare ").replace(".html", "");
    $("compares").appendChild(a);
    $("compares").appendChild(document.createTextNode(" "));
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const key of Object.keys(state)) {
      if (params.has(key)) state[key] = key === "dir" || key === "page" ? Number(params.get(key)) : params.get(key);
    }
    if (!D.scores.includes(state.scoreColumn)) state.scoreColumn = defaultScore;
    $("model").value = state.model; $("sign").value = state.sign;
    $("layer-min").value = state.layerMin; $("layer-max").value = state.layerMax;
    $("score-column").value = state.scoreColumn; $("score-min").value = state.scoreMin;
    $("text").value = state.text; $("semantic").value = state.semantic;
  }
  function writeHash() {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(state)) if (value !== "" && value !== null) params.set(key, String(value));
    history.replaceState(null, "", "#" + params.toString());
  }

  // ---- filter, sort, render ----
  function filter() {
    const out = new Int32Array(n);
    let m = 0;
    const model = state.model === "" ? -1 : Number(state.model);
    const sign = state.sign === "" ? -1 : Number(state.sign);
    const lo = state.layerMin === "" ? -Infinity : Number(state.layerMin);
    const hi = state.layerMax === "" ? Infinity : Number(state.layerMax);
    const column = num[state.scoreColumn];
    const min = state.scoreMin === "" || !column ? -Infinity : Number(state.scoreMin);
    const words = state.text.toLowerCase().split(/\s+/).filter(Boolean);
    for (let i = 0; i < n; i++) {
      if (model >= 0 && C.model[i] !== model) continue;
      if (sign >= 0 && C.sign[i] !== sign) continue;
      const layer = C.layer[i];
      if (layer < lo || layer > hi) continue;
      if (min > -Infinity && !(column[i] >= min)) continue;
      if (words.length) {
        const text = lower[i];
        let all = true;
        for (const w of words) if (!text.includes(w)) { all = false; break; }
        if (!all) continue;
      }
      out[m++] = i;
    }
    return out.subarray(0, m);
  }

  function sortKey(name) {
    if (name === "similarity") return similarity;
    if (num[name]) return num[name];
    if (name === "model") return C.model.map((i) => D.models[i]);
    if (name === "sign") return C.sign.map((i) => D.signs[i]);
    if (name === "explanation") return lower;
    return C[name];
  }

  function sort(indices) {
    const key = sortKey(state.sort);
    if (!key) return indices;
    const dir = state.dir;
    const numeric = typeof key[0] === "number" || key instanceof Float64Array || key instanceof Float32Array;
    const sorted = Array.from(indices);
    sorted.sort((a, b) => {
      const x = key[a], y = key[b];
      if (numeric) {
        const xn = Number.isNaN(x), yn = Number.isNaN(y);
        if (xn || yn) return xn === yn ? a - b : xn ? 1 : -1; // missing scores last, either way
        if (x !== y) return (x - y) * dir;
      } else if (x !== y) {
        return (x < y ? -1 : 1) * dir;
      }
      if (C.layer[a] !== C.layer[b]) return C.layer[a] - C.layer[b];
      return C.neuron[a] - C.neuron[b];
    });
    return Int32Array.from(sorted);
  }

  function cell(tr, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    tr.appendChild(td);
    return td;
  }
  const fmt = (x) => (Number.isNaN(x) || x === undefined ? "—" : x.toFixed(3));

  function render() {
    const body = document.querySelector("#neurons tbody");
    const pages = Math.max(1, Math.ceil(view.length / PAGE));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    const rows = document.createDocumentFragment();
    const start = state.page * PAGE;
    for (let r = start; r < Math.min(view.length, start + PAGE); r++) {
      const i = view[r];
      const tr = document.createElement("tr");
      tr.dataset.row = String(i);
      cell(tr, D.models[C.model[i]]);
      cell(tr, String(C.layer[i]), "num");
      cell(tr, String(C.neuron[i]), "num");
      cell(tr, D.signs[C.sign[i]]);
      const td = cell(tr, "", "explanation");
      const a = document.createElement("a");
      a.href = pageOf(i);
      a.textContent = C.explanation[i];
      td.appendChild(a);
      for (const s of D.scores) cell(tr, fmt(num[s][i]), "num score " + s);
      if (similarity) cell(tr, fmt(similarity[i]), "num similarity");
      rows.appendChild(tr);
    }
    body.replaceChildren(rows);
    simHead.hidden = !similarity;
    for (const th of head.children) {
      th.classList.toggle("sorted", th.dataset.sort === state.sort);
      th.dataset.dir = th.dataset.sort === state.sort ? (state.dir > 0 ? "asc" : "desc") : "";
    }
    $("page").textContent = `page ${state.page + 1} of ${pages}`;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
    const what = similarity ? ` · ranked by meaning (${similarityMode})` : "";
    $("status").textContent = `${view.length.toLocaleString()} of ${n.toLocaleString()} neurons${what}`;
    histogram();
  }

  function histogram() {
    const column = num[state.scoreColumn];
    const box = $("histogram");
    box.replaceChildren();
    if (!column) return;
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < n; i++) if (!Number.isNaN(column[i])) { lo = Math.min(lo, column[i]); hi = Math.max(hi, column[i]); }
    if (lo === Infinity) return;
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    const bins = 20, counts = new Int32Array(bins);
    for (const i of view) {
      const x = column[i];
      if (!Number.isNaN(x)) counts[Math.min(bins - 1, Math.floor(((x - lo) / (hi - lo)) * bins))]++;
    }
    const peak = Math.max(1, ...counts);
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 420 110");
    svg.setAttribute("class", "histogram");
    const label = (x, y, text, anchor) => {
      const t = document.createElementNS(NS, "text");
      t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("text-anchor", anchor);
      t.textContent = text;
      svg.appendChild(t);
    };
    counts.forEach((count, b) => {
      const rect = document.createElementNS(NS, "rect");
      const h = (count / peak) * 80;
      rect.setAttribute("x", String(10 + b * 20)); rect.setAttribute("width", "18");
      rect.setAttribute("y", String(88 - h)); rect.setAttribute("height", String(h));
      rect.dataset.count = String(count);
      const title = document.createElementNS(NS, "title");
      const a = lo + ((hi - lo) * b) / bins, z = lo + ((hi - lo) * (b + 1)) / bins;
      title.textContent = `${a.toFixed(2)} to ${z.toFixed(2)}: ${count} neurons`;
      rect.appendChild(title);
      svg.appendChild(rect);
    });
    label(10, 104, lo.toFixed(2), "start");
    label(410, 104, hi.toFixed(2), "end");
    label(210, 104, `${D.score_labels[state.scoreColumn]} (shown neurons)`, "middle");
    box.appendChild(svg);
  }

  function apply(keepPage) {
    const t = performance.now();
    if (!keepPage) state.page = 0;
    view = sort(filter());
    render();
    writeHash();
    window.NA_LAST_APPLY_MS = performance.now() - t;
  }

  // ---- semantic search ----
  const STOP = new Set("neuron neurons about that which fire fires firing activate activates on in of the and for with to a an is are its their this these those tokens token words word text".split(" "));
  function decode(b64) {
    const raw = atob(b64);
    const out = new Int8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = (raw.charCodeAt(i) << 24) >> 24;
    return out;
  }
  let S = null;
  function loadSemantic() {
    if (S) return Promise.resolve(S);
    if (!D.semantic) return Promise.reject(new Error("no semantic search: the site was built with --no-embed"));
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "data/semantic.js";
      script.onload = () => {
        const raw = window.NA_SEMANTIC;
        S = { dim: raw.dim, scale: raw.scale, neurons: decode(raw.neurons), vectors: decode(raw.word_vectors), words: new Map() };
        raw.words.forEach((w, i) => S.words.set(w, i));
        resolve(S);
      };
      script.onerror = () => reject(new Error("data/semantic.js is missing: rebuild the site"));
      document.head.appendChild(script);
    });
  }
  async function queryVector(query) {
    if (location.protocol.startsWith("http")) {
      try {
        const answer = await fetch("api/embed?q=" + encodeURIComponent(query));
        if (answer.ok) return { vector: Float32Array.from((await answer.json()).vector), mode: "query embedded by the server" };
      } catch (error) { /* a static host: embed in the page */ }
    }
    const words = (query.toLowerCase().match(/[a-z]+/g) || []).filter((w) => !STOP.has(w));
    const known = words.filter((w) => S.words.has(w));
    if (!known.length) return { vector: null, mode: `no known word in "${query}"` };
    const v = new Float32Array(S.dim);
    for (const w of known) {
      const row = S.words.get(w) * S.dim;
      for (let d = 0; d < S.dim; d++) v[d] += S.vectors[row + d];
    }
    let norm = 0;
    for (let d = 0; d < S.dim; d++) norm += v[d] * v[d];
    norm = Math.sqrt(norm) || 1;
    for (let d = 0; d < S.dim; d++) v[d] /= norm;
    const unknown = words.filter((w) => !S.words.has(w));
    return { vector: v, mode: `mean of word vectors: ${known.join(", ")}${unknown.length ? "; unknown: " + unknown.join(", ") : ""}` };
  }
  async function semanticSearch() {
    const began = performance.now();
    const query = state.semantic.trim();
    if (!query) { similarity = null; if (state.sort === "similarity") { state.sort = defaultScore || "layer"; state.dir = -1; } apply(); return; }
    try {
      await loadSemantic();
    } catch (error) {
      $("status").textContent = error.message;
      return;
    }
    const q = await queryVector(query);
    if (!q.vector) { similarity = null; apply(); $("status").textContent += ` · ${q.mode}`; return; }
    const sims = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let dot = 0;
      const row = i * S.dim;
      for (let d = 0; d < S.dim; d++) dot += S.neurons[row + d] * q.vector[d];
      sims[i] = dot / S.scale;
    }
    similarity = sims;
    similarityMode = q.mode;
    state.sort = "similarity";
    state.dir = -1;
    apply();
    window.NA_LAST_SEMANTIC_MS = performance.now() - began; // vectors loaded (first time), query embedded, ranked, shown
  }

  // ---- events ----
  const bind = (id, key, event) => $(id).addEventListener(event || "input", () => { state[key] = $(id).value; apply(); });
  bind("model", "model", "change");
  bind("sign", "sign", "change");
  bind("layer-min", "layerMin");
  bind("layer-max", "layerMax");
  bind("score-column", "scoreColumn", "change");
  bind("score-min", "scoreMin");
  bind("text", "text");
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); state.semantic = $("semantic").value; semanticSearch(); });
  $("semantic").addEventListener("search", () => { state.semantic = $("semantic").value; semanticSearch(); });
  $("reset").addEventListener("click", () => {
    Object.assign(state, { model: "", sign: "", layerMin: "", layerMax: "", scoreMin: "", text: "", semantic: "", sort: defaultScore || "layer", dir: -1 });
    similarity = null;
    readHashFromState();
    apply();
  });
  function readHashFromState() { writeHash(); readHash(); }
  head.addEventListener("click", (event) => {
    const key = event.target.dataset && event.target.dataset.sort;
    if (!key) return;
    if (state.sort === key) state.dir = -state.dir;
    else { state.sort = key; state.dir = num[key] || key === "similarity" ? -1 : 1; }
    apply();
  });
  $("prev").addEventListener("click", () => { state.page--; apply(true); });
  $("next").addEventListener("click", () => { state.page++; apply(true); });

  readHash();
  if (state.semantic) semanticSearch(); else apply(true);
  window.NA_READY_MS = performance.now() - started; // this script's own start-up
  window.NA_READY_AT = performance.now(); // since navigation start: the whole load
  document.body.dataset.ready = "1";
})();
