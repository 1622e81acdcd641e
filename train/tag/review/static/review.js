// tag review: the grid, filters, edits (saved at once through /api/edit) and keys.
"use strict";
const $ = (id) => document.getElementById(id);
const CATEGORY = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta",
                  9: "rating"};
let images = [], categories = {}, selected = new Set(), shown = [], focused = null;

async function load() {
  const reply = await fetch("/api/state");
  const data = await reply.json();
  images = data.images;
  data.tags.forEach(([name, cat]) => { categories[name] = cat; });
  $("folder").textContent = data.folder + " · model " + data.model;
  $("corrections").textContent = data.corrections;
  $("retrain-commands").textContent = data.retrain;
  $("all-tags").innerHTML = data.tags.map(([n]) => `<option value="${esc(n)}">`).join("");
  const cats = [...new Set(data.tags.map(([, c]) => c))].sort((a, b) => a - b);
  $("filter-category").innerHTML += cats.map(
    (c) => `<option value="${c}">${CATEGORY[c] || c}</option>`).join("");
  render();
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;"}[c]));
}

function scoreOf(img, tag) {
  const p = img.predicted.find((q) => q.tag === tag);
  return p ? p.score : null;
}

function colour(score) {      // low scores pale, high scores strong green; unknown grey
  if (score === null) return "#eee";
  return `hsl(${Math.round(10 + 110 * score)}, 70%, ${Math.round(92 - 32 * score)}%)`;
}

function matches(img) {
  const tag = $("filter-tag").value.trim(), cat = $("filter-category").value;
  const lo = parseFloat($("score-min").value) || 0;
  const hi = $("score-max").value === "" ? 1 : parseFloat($("score-max").value);
  if (!tag && !cat && lo <= 0 && hi >= 1) return true;
  const names = new Set([...img.caption, ...img.predicted.map((p) => p.tag)]);
  return [...names].some((n) => {
    if (tag && !n.includes(tag)) return false;
    if (cat && String(categories[n] ?? 0) !== cat) return false;
    const s = scoreOf(img, n) ?? 0;
    return s >= lo && s <= hi;
  });
}

function render() {
  const how = $("sort").value, tag = $("filter-tag").value.trim();
  shown = images.filter(matches);
  if (how === "uncertainty") shown.sort((a, b) => a.uncertainty - b.uncertainty || a.id - b.id);
  else if (how === "score") shown.sort((a, b) => (scoreOf(b, tag) ?? -1) - (scoreOf(a, tag) ?? -1)
                                                 || a.id - b.id);
  else shown.sort((a, b) => a.path.localeCompare(b.path));
  $("grid").replaceChildren(...shown.map(card));
  $("shown-count").textContent = `${shown.length} of ${images.length} images`;
  $("selected-count").textContent = selected.size;
}

function card(img) {
  const el = document.createElement("div");
  el.className = "card" + (selected.has(img.id) ? " selected" : "");
  el.tabIndex = 0;
  el.dataset.id = img.id;
  el.dataset.path = img.path;
  const caption = new Set(img.caption);
  const chips = img.caption.map((t) => chip(img, t, true)).concat(
    img.predicted.filter((p) => !caption.has(p.tag) && p.score >= p.threshold / 2)
      .map((p) => chip(img, p.tag, false)));
  const problem = img.error || img.caption_error;
  el.innerHTML = `<img src="/image/${img.id}" alt="${esc(img.path)}" loading="lazy">
    <div class="path"><input type="checkbox" class="select" ${selected.has(img.id) ? "checked" : ""}
    aria-label="select">${esc(img.path)}</div>
    ${problem ? `<div class="error">unreadable: ${esc(problem)}</div>` : ""}
    <div class="chips">${chips.join("")}</div>
    <input class="add-tag" list="all-tags" placeholder="add a tag (a)" autocomplete="off">`;
  return el;
}

const UNKNOWN = "not in the model's tags.csv: saved in the caption, but no label when retraining";

function chip(img, tag, inCaption) {
  const s = scoreOf(img, tag);
  const p = img.predicted.find((q) => q.tag === tag);
  const unknown = inCaption && (img.unknown || []).includes(tag);
  const title = unknown ? UNKNOWN : s === null ? "not scored by the model" :
    `score ${s.toFixed(3)}, threshold ${p.threshold.toFixed(2)}`;
  const button = inCaption
    ? `<button class="reject" title="reject: remove from the caption">✕</button>`
    : `<button class="accept" title="accept: add to the caption">✓</button>`;
  return `<span class="chip ${inCaption ? "in-caption" : "suggested"}${unknown ? " unknown" : ""}"
    data-tag="${esc(tag)}"
    style="background:${colour(s)}" title="${esc(title)}">${esc(tag)}${s === null ? "" :
    `<span class="score">${s.toFixed(2)}</span>`}${button}</span>`;
}

async function edit(ids, add, remove) {
  const items = ids.map((id) => ({id, version: images[id].version}));
  const reply = await fetch("/api/edit", {method: "POST", headers: {"Content-Type":
    "application/json"}, body: JSON.stringify({items, add, remove})});
  if (!reply.ok) { status(await reply.text(), true); return; }
  const {results} = await reply.json();
  const problems = [];
  results.forEach((r) => {
    if (r.image) images[r.image.id] = r.image;
    if (r.status === "conflict" || r.status === "error") problems.push(r.message);
  });
  const saved = results.filter((r) => r.status === "saved").length;
  render();
  results.filter((r) => r.status === "conflict").forEach((r) => {
    const el = document.querySelector(`.card[data-id="${r.image.id}"]`);
    if (el) el.classList.add("conflict");
  });
  if (problems.length) status(problems.join("; "), true);
  else if (saved) status(`saved ${saved} caption${saved === 1 ? "" : "s"}`, false);
  else status("no change: the captions already say so", false);
  refocus();
}

async function unknownOf(tag) {  // the server's word: does the model's tags.csv know it?
  const reply = await fetch("/api/check?" + new URLSearchParams({tag}));
  return reply.ok ? (await reply.json()).unknown.length > 0 : false;
}

async function markTyped(input) {    // as one types: an unknown tag is marked before saving
  const tag = input.value.trim();
  const unknown = tag !== "" && await unknownOf(tag);
  if (input.value.trim() !== tag) return;          // typed on meanwhile
  input.classList.toggle("unknown", unknown);
  input.title = unknown ? UNKNOWN : "";
}

// Save a typed tag; an unknown one only on the second Enter, once the warning was shown.
async function saveTyped(input, ids, adding) {
  const tag = input.value.trim();
  if (adding && await unknownOf(tag) && input.dataset.confirmed !== tag) {
    input.classList.add("unknown");
    input.dataset.confirmed = tag;
    status(`"${tag}" is not in the model's tags.csv: it would be saved in the caption but ` +
           "be no label when retraining. Enter again saves it anyway.", true);
    return;
  }
  delete input.dataset.confirmed;
  edit(ids, adding ? [tag] : [], adding ? [] : [tag]);
}

function status(text, bad) {
  $("status").textContent = text;
  $("status").className = bad ? "bad" : "good";
}

function refocus() {
  if (focused === null) return;
  const el = document.querySelector(`.card[data-id="${focused}"]`);
  if (el) el.focus({preventScroll: true});
}

function toggle(id) {
  selected.has(id) ? selected.delete(id) : selected.add(id);
  const el = document.querySelector(`.card[data-id="${id}"]`);
  if (el) {
    el.classList.toggle("selected", selected.has(id));
    el.querySelector(".select").checked = selected.has(id);
  }
  $("selected-count").textContent = selected.size;
}

$("grid").addEventListener("click", (e) => {
  const el = e.target.closest(".card");
  if (!el) return;
  const id = +el.dataset.id;
  focused = id;
  const c = e.target.closest(".chip");
  if (e.target.classList.contains("select")) { toggle(id); return; }
  if (c && e.target.classList.contains("reject")) edit([id], [], [c.dataset.tag]);
  else if (c && e.target.classList.contains("accept")) edit([id], [c.dataset.tag], []);
  else if (e.shiftKey || e.ctrlKey || e.metaKey) toggle(id);
});

$("grid").addEventListener("focusin", (e) => {
  const el = e.target.closest(".card");
  if (el) focused = +el.dataset.id;
});

$("grid").addEventListener("keydown", (e) => {
  if (e.target.classList.contains("add-tag")) {
    if (e.key === "Enter" && e.target.value.trim()) {
      const id = +e.target.closest(".card").dataset.id;
      saveTyped(e.target, [id], true);
    } else if (e.key === "Escape") e.target.closest(".card").focus();
    return;
  }
  const el = e.target.closest(".card");
  if (!el) return;
  const id = +el.dataset.id, at = shown.findIndex((i) => i.id === id);
  const go = (k) => { const next = shown[k]; if (next) {
    document.querySelector(`.card[data-id="${next.id}"]`).focus(); } };
  if (e.key === "j" || e.key === "ArrowRight" || e.key === "ArrowDown") go(at + 1);
  else if (e.key === "k" || e.key === "ArrowLeft" || e.key === "ArrowUp") go(at - 1);
  else if (e.key === "x" || e.key === " ") toggle(id);
  else if (e.key === "a") el.querySelector(".add-tag").focus();
  else if (e.key === "Enter") {
    const s = el.querySelector(".chip.suggested");
    if (s) edit([id], [s.dataset.tag], []);
  } else if (e.key === "Delete" || e.key === "Backspace") {
    const c = [...el.querySelectorAll(".chip.in-caption")].pop();
    if (c) edit([id], [], [c.dataset.tag]);
  } else return;
  e.preventDefault();
});

document.addEventListener("keydown", (e) => {
  if (e.key === "/" && !e.target.matches("input")) { e.preventDefault(); $("filter-tag").focus(); }
});

function bulk(adding) {
  const tag = $("bulk-tag").value.trim();
  if (!tag) { status("type a tag for the selection first", true); return; }
  if (!selected.size) { status("select images first (x, or shift-click)", true); return; }
  saveTyped($("bulk-tag"), [...selected], adding);
}

$("bulk-add").addEventListener("click", () => bulk(true));
$("bulk-remove").addEventListener("click", () => bulk(false));
$("bulk-tag").addEventListener("keydown", (e) => { if (e.key === "Enter") bulk(true); });
$("select-visible").addEventListener("click", () => {
  shown.forEach((i) => selected.add(i.id)); render(); });
$("select-none").addEventListener("click", () => { selected.clear(); render(); });
$("grid").addEventListener("input", (e) => {
  if (e.target.classList.contains("add-tag")) markTyped(e.target);
});
$("bulk-tag").addEventListener("input", (e) => markTyped(e.target));
["filter-tag", "filter-category", "score-min", "score-max", "sort"].forEach(
  (id) => $(id).addEventListener("input", render));

load();
