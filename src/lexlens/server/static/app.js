// lexlens web page: plain JavaScript over the JSON API (POST /search, POST /search/upload).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, hits: [], busy: false, cutoffTouched: false, seq: 0 };

function setError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

async function api(url, options) {
  const resp = await fetch(url, options);
  let body = null;
  try {
    body = await resp.json();
  } catch (e) {
    body = null;
  }
  if (!resp.ok) {
    const msg = body && body.error ? body.error : `${resp.status} ${resp.statusText}`;
    throw new Error(msg);
  }
  return body;
}

async function loadIndexes() {
  try {
    const indexes = await api("/indexes");
    const select = $("index");
    select.replaceChildren(
      ...indexes.map((ix) => {
        const opt = document.createElement("option");
        opt.value = ix.name;
        opt.textContent = ix.name;
        opt.dataset.facts = `${ix.count} ${ix.items} · ${ix.model} · ${ix.spec}`;
        return opt;
      })
    );
    showFacts();
  } catch (e) {
    setError(`cannot list the indexes: ${e.message}`);
  }
}

function showFacts() {
  const opt = $("index").selectedOptions[0];
  $("index-facts").textContent = opt ? opt.dataset.facts : "";
}

// The words a lexical match shares with the query, whatever shape `explain` has:
// a string, a list of words, a list of [word, weight] pairs or {word, weight} objects,
// or an object mapping word -> weight.
function matchedWords(explain) {
  if (explain === null || explain === undefined) return [];
  if (typeof explain === "string") return explain ? [explain] : [];
  if (Array.isArray(explain)) {
    return explain
      .map((e) => {
        if (typeof e === "string") return e;
        if (Array.isArray(e)) return String(e[0]);
        if (e && typeof e === "object") return String(e.word ?? e.term ?? e.token ?? "");
        return String(e);
      })
      .filter((w) => w);
  }
  if (typeof explain === "object") {
    if (Array.isArray(explain.words)) return matchedWords(explain.words);
    return Object.entries(explain)
      .filter(([, v]) => typeof v === "number")
      .sort((a, b) => b[1] - a[1])
      .map(([w]) => w);
  }
  return [];
}

// A row of word chips (class "word") under a result, one per entry, filled by `fill`.
function chipRow(title, entries, fill) {
  const chips = document.createElement("div");
  chips.className = "words";
  chips.title = title;
  for (const e of entries) {
    const chip = document.createElement("span");
    chip.className = "word";
    fill(chip, e);
    chips.appendChild(chip);
  }
  return chips;
}

// One query word a lexical match owes its score to (an `explain_words` entry): the word, its
// share of the score and the model's word pieces it matched through.
function fillGroup(chip, g) {
  chip.title = `${g.query_word}: ${g.contribution.toFixed(3)} from ${g.pieces.join(", ")}`;
  const share = document.createElement("span");
  share.className = "share";
  share.textContent = ` ${g.contribution.toFixed(2)}`;
  const pieces = document.createElement("span");
  pieces.className = "pieces";
  pieces.textContent = ` (${g.pieces.join(", ")})`;
  chip.append(document.createTextNode(g.query_word), share, pieces);
}

function render() {
  const cutoff = parseFloat($("cutoff").value);
  const grid = $("results");
  const shown = state.hits.filter((h) => h.score >= cutoff);
  grid.replaceChildren(
    ...shown.map((h) => {
      const card = document.createElement("figure");
      card.className = "hit";
      card.dataset.id = h.id;
      card.dataset.score = h.score;
      card.tabIndex = 0;
      card.title = `more like #${h.id}`;
      if (h.thumbnail) {
        const img = document.createElement("img");
        img.src = h.thumbnail;
        img.alt = h.captions && h.captions.length ? h.captions[0] : `item ${h.id}`;
        img.loading = "lazy";
        card.appendChild(img);
      }
      const cap = document.createElement("figcaption");
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = h.score.toFixed(3);
      const rank = document.createElement("span");
      rank.className = "rank muted";
      rank.textContent = `#${h.rank} · id ${h.id}`;
      const text = document.createElement("div");
      text.className = "caption";
      text.textContent = h.text ?? (h.captions && h.captions.length ? h.captions[0] : "");
      cap.append(score, rank, text);
      const groups = Array.isArray(h.explain_words) ? h.explain_words : [];
      const words = groups.length ? [] : matchedWords(h.explain);
      if (groups.length) {
        const title = "query words behind this match: share of the score (word pieces matched)";
        cap.appendChild(chipRow(title, groups, fillGroup));
      }
      if (words.length) {
        const title = "words this result shares with the query";
        cap.appendChild(chipRow(title, words, (chip, w) => (chip.textContent = w)));
      }
      card.appendChild(cap);
      card.addEventListener("click", () => searchItem(h.id));
      card.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") searchItem(h.id);
      });
      return card;
    })
  );
  const hidden = state.hits.length - shown.length;
  const extra = hidden ? ` (${hidden} below the cut-off hidden)` : "";
  $("status").dataset.count = shown.length;
  if (state.description) $("status").textContent = state.description + extra;
}

// The cut-off slider spans the scores of the current results (cosines may be negative,
// lexical scores may exceed 1); a value the user chose is kept while it is in range.
function fitCutoff() {
  if (!state.hits.length) return;
  const slider = $("cutoff");
  const scores = state.hits.map((h) => h.score);
  const lo = Math.floor(Math.min(...scores) * 100) / 100;
  const hi = Math.max(Math.ceil(Math.max(...scores) * 100) / 100, lo + 0.01);
  const keep = state.cutoffTouched ? parseFloat(slider.value) : lo;
  slider.min = lo;
  slider.max = hi;
  slider.step = 0.01;
  slider.value = Math.min(Math.max(keep, lo), hi);
  $("cutoff-value").textContent = parseFloat(slider.value).toFixed(2);
}

function describe(res) {
  const t = res.timings_ms;
  const total = (t.encode + t.search + t.metadata).toFixed(1);
  return `${res.hits.length} results for ${res.query} in ${res.index} · ${total} ms ` +
    `(encode ${t.encode.toFixed(1)}, search ${t.search.toFixed(1)}, metadata ${t.metadata.toFixed(1)})`;
}

// Answers can arrive out of order: only the latest request's answer is shown.
async function run(request) {
  const seq = ++state.seq;
  setError("");
  state.busy = true;
  $("status").textContent = "searching…";
  document.body.classList.add("busy");
  try {
    const res = await request();
    if (seq !== state.seq) return;
    state.hits = res.hits;
    state.description = describe(res);
    fitCutoff();
    render();
  } catch (e) {
    if (seq !== state.seq) return;
    state.hits = [];
    state.description = "";
    render();
    $("status").textContent = "";
    setError(e.message);
  } finally {
    if (seq === state.seq) {
      state.busy = false;
      document.body.classList.remove("busy");
    }
  }
}

function common() {
  const k = Math.max(1, Math.min(1000, parseInt($("k").value, 10) || 24));
  return { k, index: $("index").value || null };
}

function search() {
  const text = $("text").value.trim();
  const { k, index } = common();
  if (state.file) {
    const form = new FormData();
    form.append("image", state.file, state.file.name || "query.png");
    if (text) {
      form.append("text", text);
      form.append("weight", $("weight").value);
    }
    form.append("k", k);
    if (index) form.append("index", index);
    return run(() => api("/search/upload", { method: "POST", body: form }));
  }
  if (!text) {
    setError("type a query or drop an image");
    return Promise.resolve();
  }
  return run(() => api("/search", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text, k, index }),
  }));
}

function searchItem(id) {
  const { k, index } = common();
  return run(() => api("/search", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ item: id, k, index }),
  }));
}

function setFile(file) {
  if (file && !file.type.startsWith("image/")) {
    setError(`${file.name} is not an image`);
    return;
  }
  state.file = file || null;
  $("query-image").hidden = !state.file;
  $("drop-hint").hidden = !!state.file;
  $("weight-box").hidden = !state.file;
  const img = $("query-preview");
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = state.file ? URL.createObjectURL(state.file) : "";
  if (state.file) search();
}

function wire() {
  $("query").addEventListener("submit", (ev) => {
    ev.preventDefault();
    search();
  });
  $("index").addEventListener("change", () => {
    showFacts();
    if (state.hits.length) search();
  });
  $("file").addEventListener("change", (ev) => setFile(ev.target.files[0]));
  $("clear-image").addEventListener("click", () => {
    $("file").value = "";
    setFile(null);
  });
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (ev) => {
      ev.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    const file = ev.dataTransfer.files[0];
    if (file) setFile(file);
  });
  $("weight").addEventListener("input", () => {
    $("weight-value").textContent = parseFloat($("weight").value).toFixed(2);
  });
  $("weight").addEventListener("change", () => state.file && search());
  $("cutoff").addEventListener("input", () => {
    state.cutoffTouched = true;
    $("cutoff-value").textContent = parseFloat($("cutoff").value).toFixed(2);
    render();
  });
}

wire();
loadIndexes();
