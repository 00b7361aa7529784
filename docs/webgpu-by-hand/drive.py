"""By-hand check, not part of the factory: run a WebGPU bundle (model.wasm, tensor-cache.json,
params, mlc-chat-config.json) in Debian's headless Chromium through TVM's JS runtime and
save the logits after each token, the way factory/in_toolchain/vm_script.py's `logits`
does for the Relax VM. README.md beside this file says how the pieces were built.

    python drive.py ROOT BUNDLE_PATH TOKENS_JSON OUT_NPY [PREFILL]

ROOT is served on 127.0.0.1:8765 and must hold page.html at page/index.html, TVM's JS
runtime at jsb/lib/index.js and the bundle at BUNDLE_PATH (e.g. /conv/).
"""

from __future__ import annotations

import functools
import http.server
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
from playwright.sync_api import sync_playwright

# SwiftShader's WebGPU adapter appears only with --enable-unsafe-webgpu; the rest keeps
# Chromium off the closed network (FACTS.md).
CHROMIUM_ARGS = [
    "--no-sandbox", "--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def main(root: str, bundle: str, tokens_json: str, out_npy: str, prefill: str = "3") -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 8765), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tokens = json.loads(Path(tokens_json).read_text())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("console", lambda message: print("console:", message.text[:300]))
        page.on("pageerror", lambda error: print("pageerror:", error))
        page.goto("http://127.0.0.1:8765/page/index.html")
        started = time.perf_counter()
        result = page.evaluate("([b, t, p]) => runModel(b, t, p)", [bundle, tokens, int(prefill)])
        print(f"in the page: {time.perf_counter() - started:.1f} s")
        browser.close()
    server.shutdown()
    np.save(out_npy, np.asarray(result["rows"], dtype="float32"))
    np.save(out_npy.removesuffix(".npy") + "-prefill.npy", np.asarray(result["after"], dtype="float32"))
    print({k: v for k, v in result.items() if k not in ("rows", "after")})


if __name__ == "__main__":
    main(*sys.argv[1:])
