"""The catalog's run.html: runs a WebGPU bundle in the visitor's browser.

The catalog links each WebGPU bundle here as `run.html#model=..&model_lib=..&runtime=..`:
the weight repo (`factory export`'s, on the hub; `resolve/main/` is appended as WebLLM
does), the `.wasm` and TVM's JS runtime built with it (beside the library, where export
puts it). The page loads the runtime, the library and the tensor cache, encodes the prompt
with the bundle's `tokenizer.json` (RWKV World is a greedy longest match over UTF-8 bytes,
which the file's vocab states exactly), and decodes greedily, taking the argmax of each
step's logits on the CPU as the build's browser gate does (WebLLM samples on the GPU, which
hung on SwiftShader: FACTS.md). Nothing is sent anywhere; text is shown with textContent.
The WebGPU driver is the browser gate's (factory/in_toolchain/webgpu_session.js): the
catalog writes it beside run.html.
"""

from __future__ import annotations

from factory.in_toolchain import SCRIPTS_DIR

# run.html loads it as ./webgpu_session.js.
SESSION_SCRIPT = SCRIPTS_DIR / "webgpu_session.js"

RUN_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>factory: run a WebGPU bundle</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; max-width: 60rem; color: #1b1f24; }
  h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
  #status { color: #57606a; margin-bottom: .8rem; white-space: pre-wrap; }
  #status.error { color: #cf222e; font-weight: 600; }
  textarea { width: 100%; font: inherit; }
  form { display: flex; flex-direction: column; gap: .5rem; margin-bottom: 1rem; }
  .row { display: flex; gap: 1rem; align-items: center; }
  #output { white-space: pre-wrap; background: #f6f8fa; padding: .6rem; min-height: 3rem; }
</style>
</head>
<body>
<h1 id="title">Run a WebGPU bundle in this browser</h1>
<div id="status">loading</div>
<form id="form" onsubmit="return false">
  <textarea id="prompt" rows="4">The capital of France is</textarea>
  <div class="row">
    <label><input type="checkbox" id="chat"> chat template (User: ... Assistant:)</label>
    <label>tokens <input id="tokens" type="number" value="32" min="1" max="4096"></label>
    <button id="go" disabled>generate</button>
  </div>
</form>
<pre id="output"></pre>
<script src="./webgpu_session.js"></script>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const args = new URLSearchParams(location.hash.slice(1));

function say(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

// WebLLM's rule for a ModelRecord's `model`: a repo URL gets resolve/main/ appended.
function weightsBase(model) {
  let url = model.endsWith("/") ? model : model + "/";
  if (!/.+resolve\\/.+\\//.test(url)) url += "resolve/main/";
  return new URL(url, location.href).href;
}

async function fetched(url, kind) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return kind === "json" ? response.json() : response.arrayBuffer();
}

function loadScript(url) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = url;
    script.onload = resolve;
    script.onerror = () => reject(new Error("cannot load the JS runtime " + url));
    document.head.appendChild(script);
  });
}

// GPT-2's byte <-> character table, which tokenizer.json's ByteLevel parts use.
function byteAlphabet() {
  const table = new Array(256);
  const printable = (b) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let extra = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCharCode(printable(b) ? b : 256 + extra++);
  return table;
}

// RWKV World: at each position the longest vocab entry that matches the bytes there.
class WorldTokenizer {
  constructor(json) {
    this.alphabet = byteAlphabet();
    this.bytes = new Map(this.alphabet.map((c, b) => [c, b]));
    this.ids = new Map();
    this.pieces = [];
    this.longest = 1;
    for (const [piece, id] of Object.entries(json.model.vocab)) {
      this.pieces[id] = piece;
      if (id === 0) continue;  // the unknown-token name, not a vocab entry
      this.ids.set(piece, id);
      this.longest = Math.max(this.longest, piece.length);
    }
  }
  encode(text) {
    const s = Array.from(new TextEncoder().encode(text), (b) => this.alphabet[b]).join("");
    const ids = [];
    for (let at = 0; at < s.length;) {
      let length = Math.min(this.longest, s.length - at);
      while (length > 1 && !this.ids.has(s.substr(at, length))) length--;
      ids.push(this.ids.get(s.substr(at, length)));
      at += length;
    }
    return ids;
  }
  // Text as the ids arrive; a token may end inside a character, which waits for the next.
  // decode(null) ends the text (an unfinished character shows as U+FFFD).
  decoder() {
    const utf8 = new TextDecoder("utf-8");
    return (id) => id === null ? utf8.decode()
      : utf8.decode(Uint8Array.from(this.pieces[id] || "", (c) => this.bytes.get(c)), { stream: true });
  }
}

async function open() {
  const model = args.get("model"), lib = args.get("model_lib"), runtime = args.get("runtime");
  if (!model || !lib || !runtime) {
    throw new Error("this page runs the bundle its address names (#model=...&model_lib=...&runtime=...): " +
                    "open it from the catalog's link");
  }
  if (!navigator.gpu) throw new Error("this browser offers no WebGPU (navigator.gpu is missing)");
  const started = performance.now();
  const base = weightsBase(model);
  $("title").textContent = "Run " + (args.get("name") || model) + " in this browser";
  say("loading the runtime, the library and the tokenizer");
  await loadScript(new URL(runtime, location.href).href);
  const [wasm, tokenizerJson] = await Promise.all([
    fetched(new URL(lib, location.href).href, "bytes"), fetched(base + "tokenizer.json", "json")]);
  const tokenizer = new WorldTokenizer(tokenizerJson);
  const webgpu = await WebGPUSession.open(wasm);
  say("compiling the shaders and fetching the weights");
  const { forward, restart } = await WebGPUSession.session(webgpu, base, "factory-run");
  const adapter = webgpu.adapter || "WebGPU";
  return { tokenizer, forward, restart, adapter, seconds: (performance.now() - started) / 1000 };
}

const argmax = (row) => {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
};

async function generate(model) {
  const chat = $("chat").checked;
  const text = chat ? "User: " + $("prompt").value + "\\n\\nAssistant:" : $("prompt").value;
  const limit = Math.max(1, parseInt($("tokens").value, 10) || 1);
  const ids = model.tokenizer.encode(text);
  const decode = model.tokenizer.decoder();
  const run = { prompt_ids: ids, generated: [], text: "", done: false };
  window.factoryRun = run;
  $("output").textContent = "";
  model.restart();
  let t = performance.now();
  let logits = await model.forward(ids);
  const prefill = (performance.now() - t) / 1000;
  t = performance.now();
  while (run.generated.length < limit) {
    const next = argmax(logits);
    // In a chat, the model ends its turn with a blank line (or token 0, the end of a document).
    if (chat && next === 0) break;
    run.generated.push(next);
    run.text += decode(next);
    $("output").textContent = run.text;
    if (chat && run.text.includes("\\n\\n")) break;
    if (run.generated.length < limit) logits = await model.forward([next]);
  }
  const seconds = (performance.now() - t) / 1000;
  run.text += decode(null);
  $("output").textContent = run.text;
  run.done = true;
  say(model.adapter + ": prefill " + (ids.length / prefill).toFixed(1) + " tok/s (" + ids.length + " tokens), " +
      "decode " + (run.generated.length / Math.max(seconds, 1e-9)).toFixed(2) + " tok/s");
}

open().then((model) => {
  say("ready on " + model.adapter + " (loaded in " + model.seconds.toFixed(1) + " s)");
  window.factoryModel = model;
  $("go").disabled = false;
  $("go").addEventListener("click", () => {
    $("go").disabled = true;
    generate(model).catch((e) => say(String(e && e.message ? e.message : e), true))
      .finally(() => { $("go").disabled = false; });
  });
}).catch((e) => { say(String(e && e.message ? e.message : e), true); window.factoryError = String(e); });
</script>
</body>
</html>
"""
