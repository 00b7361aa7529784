"""The catalog's one HTML page. Its data is embedded as JSON (a <script
type="application/json">), so the page works from file:// (where browsers refuse to
fetch a sibling file) and from a bucket's static website alike; catalog.json beside it
holds the same data for machines, and each WebGPU bundle links to run.html beside it
(factory/clients/run_page.py). The script builds the table with textContent only,
so nothing from a store is ever parsed as HTML."""

from __future__ import annotations

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>factory catalog</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; background: #fff; }
  h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
  #summary { color: #57606a; margin-bottom: .8rem; }
  form { display: flex; gap: 1rem; flex-wrap: wrap; margin-bottom: 1rem; }
  label { display: flex; flex-direction: column; font-size: 12px; color: #57606a; }
  select { font-size: 14px; padding: .2rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { border-bottom: 1px solid #d0d7de; padding: .35rem .5rem; text-align: left; vertical-align: top; }
  th { background: #1f6feb; color: #fff; position: sticky; top: 0; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  tr.yanked td { color: #8c959f; text-decoration: line-through; background: #fff1f0; }
  tr.yanked td.status { text-decoration: none; color: #cf222e; font-weight: 600; }
  .gate-passed { color: #1a7f37; } .gate-failed { color: #cf222e; font-weight: 600; } .gate-not-run { color: #9a6700; }
  code { font-size: 12px; background: #f6f8fa; padding: 1px 3px; display: block; white-space: pre-wrap;
         word-break: break-all; }
  .muted { color: #8c959f; }
</style>
</head>
<body>
<h1>factory catalog</h1>
<div id="summary"></div>
<form id="filters" onsubmit="return false">
  <label>model <select id="f-model"><option value="">all</option></select></label>
  <label>target <select id="f-target"><option value="">all</option></select></label>
  <label>quantization <select id="f-quant"><option value="">all</option></select></label>
  <label>sort by <select id="sort">
    <option value="name">name</option>
    <option value="size-asc">size, smallest first</option>
    <option value="size-desc">size, largest first</option>
    <option value="decode-desc">decode tok/s, fastest first</option>
    <option value="prefill-desc">prefill tok/s, fastest first</option>
  </select></label>
</form>
<table id="catalog">
<thead><tr>
  <th>model</th><th>quant</th><th>target</th><th>version</th><th>size (MB)</th><th>status</th><th>gates</th>
  <th>prefill tok/s</th><th>decode tok/s</th><th>parity KL / top-1</th><th>compatibility</th><th>pull and run</th>
</tr></thead>
<tbody></tbody>
</table>
<script type="application/json" id="catalog-data">__DATA__</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("catalog-data").textContent);
const $ = (id) => document.getElementById(id);
function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function fmt(value, digits) { return value === null || value === undefined ? "\\u2013" : value.toFixed(digits); }
function fill(select, values) {
  for (const value of [...new Set(values)].sort()) {
    const option = document.createElement("option");
    option.value = value; option.textContent = value; select.appendChild(option);
  }
}
fill($("f-model"), data.entries.map((e) => e.model));
fill($("f-target"), data.entries.map((e) => e.target));
fill($("f-quant"), data.entries.map((e) => e.quant));
const speed = (v) => (v === null ? -1 : v);
const orders = {
  "name": (a, b) => a.name.localeCompare(b.name) || a.published_at.localeCompare(b.published_at),
  "size-asc": (a, b) => a.size - b.size,
  "size-desc": (a, b) => b.size - a.size,
  "decode-desc": (a, b) => speed(b.decode_tok_s) - speed(a.decode_tok_s),
  "prefill-desc": (a, b) => speed(b.prefill_tok_s) - speed(a.prefill_tok_s),
};
function render() {
  const want = { model: $("f-model").value, target: $("f-target").value, quant: $("f-quant").value };
  const rows = data.entries
    .filter((e) => Object.entries(want).every(([k, v]) => !v || e[k] === v))
    .sort(orders[$("sort").value]);
  const body = document.querySelector("#catalog tbody");
  body.replaceChildren();
  for (const e of rows) {
    const tr = document.createElement("tr");
    tr.dataset.name = e.name; tr.dataset.version = e.version;
    if (e.yanked) tr.className = "yanked";
    cell(tr, e.model); cell(tr, e.quant); cell(tr, e.target); cell(tr, e.version);
    cell(tr, (e.size / 1e6).toFixed(1), "num");
    const why = e.yank_reason ? ": " + e.yank_reason : "";
    cell(tr, e.yanked ? "yanked" + why : (e.latest ? "latest" : "available"), "status");
    const gates = cell(tr, "");
    const names = Object.keys(e.gates).sort();
    if (!names.length) gates.textContent = "none recorded";
    for (const g of names) {
      const span = document.createElement("div");
      span.textContent = g + ": " + e.gates[g];
      span.className = "gate-" + e.gates[g];
      gates.appendChild(span);
    }
    cell(tr, fmt(e.prefill_tok_s, 1), "num prefill"); cell(tr, fmt(e.decode_tok_s, 1), "num decode");
    cell(tr, e.parity_kl_mean === null ? "\\u2013" : fmt(e.parity_kl_mean, 4) + " / " + fmt(e.parity_top1, 2), "num");
    const compat = cell(tr, e.flow + " \\u00b7 " + e.device + " \\u00b7 " + e.compatibility_key);
    compat.title = JSON.stringify(e.compatibility);
    const cmds = cell(tr, "");
    for (const text of [e.pull, e.run]) {
      const code = document.createElement("code"); code.textContent = text; cmds.appendChild(code);
    }
    const web = e.records && e.records.webllm;
    if (web && e.records.web_runtime) {
      // run.html beside this page runs it here: the weight repo, the .wasm and its JS runtime.
      const link = document.createElement("a");
      link.className = "run";
      link.href = "run.html#" + new URLSearchParams(
        { model: web.model, model_lib: web.model_lib, runtime: e.records.web_runtime, name: e.name });
      link.textContent = "run in this browser (WebGPU)";
      cmds.appendChild(link);
    }
    body.appendChild(tr);
  }
  const yanked = rows.filter((e) => e.yanked).length;
  $("summary").textContent = rows.length + " of " + data.entries.length + " bundle versions shown (" + yanked +
    " yanked) from " + data.store + (data.signed ? " \\u00b7 signed index" : " \\u00b7 unsigned index");
}
for (const id of ["f-model", "f-target", "f-quant", "sort"]) $(id).addEventListener("change", render);
render();
</script>
</body>
</html>
"""


def render_page(catalog_json: str) -> str:
    # "<" escaped as JSON's \\u003c, so no store text can close the script element.
    return _PAGE.replace("__DATA__", catalog_json.replace("<", "\\u003c").strip())
