"""Runs INSIDE a WebGPU toolchain image (Chromium, TVM's JS runtime), not in the factory:
the browser's counterpart of vm_script.py. A WebGPU bundle's .wasm runs in headless
Chromium on SwiftShader's WebGPU adapter (a CPU implementation, so no GPU is needed),
driven by browser_page.html (and webgpu_session.js beside it), which posts its results
back to this script's server.

    python browser_script.py library LIBRARY
        prints `FACTORY-LIBRARY {json}` as vm_script.py does: `_metadata`, the exported
        functions the runtime calls, and the device module ("webgpu").
    python browser_script.py logits PARAMS_DIR LIBRARY TOKENS_JSON OUT_NPY [PREFILL]
        the logits after each token, and with PREFILL after a prefill of the first
        PREFILL ids and each decode step after it: the same files as vm_script.py.
    python browser_script.py run PARAMS_DIR LIBRARY PROMPT TOKENS
        prefill PROMPT, decode TOKENS greedy tokens: `FACTORY-SMOKE {json}`.

Chromium comes from the image (FACTORY_CHROMIUM, default /usr/bin/chromium). TVM's JS
runtime is the bundle's own copy beside the library (X.tvmjs.js beside X.wasm), else the
image's (FACTORY_TVMJS, default /opt/factory/webgpu/tvmjs.js). Nothing leaves
127.0.0.1. The page gets FACTORY_BROWSER_TIMEOUT seconds (default 3600).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vm_script  # type: ignore[import-not-found]  # beside this file, in the image too

PAGE = Path(__file__).resolve().parent / "browser_page.html"
# The page's WebGPU driver, which the catalog's run.html shares (factory/clients/run_page.py).
SESSION = PAGE.with_name("webgpu_session.js")
CHROMIUM = os.environ.get("FACTORY_CHROMIUM", "/usr/bin/chromium")
TVMJS = os.environ.get("FACTORY_TVMJS", "/opt/factory/webgpu/tvmjs.js")
# --enable-unsafe-webgpu offers WebGPU on Linux, SwiftShader is the adapter every machine
# has; the container is the sandbox. The rest keeps Chromium off the network and quiet.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader",
    "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--enable-logging=stderr", "--v=0",
)  # fmt: skip


class PageRun:
    """One page load: serves the page and its driver, the runtime, the library and the params
    on 127.0.0.1, starts Chromium on it and waits for the page's answer."""

    def __init__(self, job: dict[str, Any], library: Path, params: Path | None) -> None:
        self.job = job
        # A bundle carries the JS runtime its .wasm was built with (X.wasm beside X.tvmjs.js):
        # the gates run that copy, as a visitor's browser will.
        beside = library.with_name(library.name.removesuffix(".wasm") + ".tvmjs.js")
        runtime = beside if beside.is_file() else Path(TVMJS)
        self.files = {"/page.html": PAGE, "/webgpu_session.js": SESSION, "/tvmjs.js": runtime, "/library.wasm": library}
        self.params = params
        self.posted: dict[str, bytes] = {}
        self.finished = threading.Event()

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        run = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/job.json":
                    return self._send(json.dumps(run.job).encode(), "application/json")
                file = run.files.get(path)
                if file is None and run.params is not None and path.startswith("/params/"):
                    candidate = (run.params / path[len("/params/") :]).resolve()
                    file = candidate if candidate.is_relative_to(run.params.resolve()) else None
                if file is None or not file.is_file():
                    return self._send(b"not found", "text/plain", 404)
                kinds = {".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm"}
                self._send(file.read_bytes(), kinds.get(file.suffix, "application/octet-stream"))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                run.posted[self.path] = body
                self._send(b"ok", "text/plain")
                if self.path in ("/done", "/error"):
                    run.finished.set()

            def _send(self, body: bytes, kind: str, status: int = 200) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __call__(self) -> dict[str, Any]:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        timeout = float(os.environ.get("FACTORY_BROWSER_TIMEOUT", "3600"))
        with tempfile.TemporaryDirectory() as profile, tempfile.TemporaryFile() as log:
            url = f"http://127.0.0.1:{server.server_address[1]}/page.html"
            argv = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url]
            browser = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
            try:
                while not self.finished.wait(1.0):
                    timeout -= 1.0
                    if browser.poll() is not None or timeout <= 0:
                        break
            finally:
                _stop(browser)
                server.shutdown()
            if "/done" in self.posted:
                result: dict[str, Any] = json.loads(self.posted["/done"])
                return result
            log.seek(0)
            tail = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()][-20:]
        what = self.posted.get("/error", b"").decode(errors="replace")
        if not what:
            what = f"Chromium exited with {browser.returncode}" if timeout > 0 else "the page did not answer in time"
        sys.exit("the page failed: " + what + "\n" + "\n".join(tail))


def _stop(browser: subprocess.Popen[bytes]) -> None:
    if browser.poll() is None:
        os.killpg(browser.pid, signal.SIGTERM)
        try:
            browser.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait()


def library(path: str) -> None:
    result = PageRun({"mode": "library"}, Path(path), None)()
    vm_script._emit(
        vm_script.LIBRARY_MARK,
        {"metadata": result["metadata"], "functions": result["functions"], "device_modules": ["webgpu"]},
    )


def logits(params_dir: str, library_path: str, tokens_json: str, out_npy: str, prefill: str = "0") -> None:
    import numpy as np

    tokens = [int(t) for t in json.loads(Path(tokens_json).read_text())]
    count = int(prefill)
    if count and not 2 <= count <= len(tokens):
        sys.exit(f"PREFILL must be between 2 and the {len(tokens)} tokens, not {count}")
    run = PageRun({"mode": "logits", "tokens": tokens, "prefill": count}, Path(library_path), Path(params_dir))
    result = run()
    vocab = int(result["vocab"])
    np.save(out_npy, np.frombuffer(run.posted["/rows"], dtype="<f4").reshape(len(tokens), vocab))
    figures: dict[str, Any] = {"positions": len(tokens), "vocab_size": vocab, "device": result["adapter"]}
    if count:
        after = np.frombuffer(run.posted["/after"], dtype="<f4").reshape(len(tokens) - count + 1, vocab)
        np.save(vm_script.prefill_path(out_npy), after)
        figures["prefill"] = count
    vm_script._emit(vm_script.LOGITS_MARK, figures)


def run(params_dir: str, library_path: str, prompt: str, tokens: int) -> None:
    folder = Path(params_dir)
    tokenizer = vm_script.Tokenizer(folder / "tokenizer_model")
    ids = tokenizer.encode(prompt)
    job = {"mode": "run", "tokens": ids, "generate": tokens}
    result = PageRun(job, Path(library_path), folder)()
    vocab = int(json.loads((folder / "mlc-chat-config.json").read_text())["vocab_size"])
    generated = [int(t) for t in result["generated"]]
    vm_script._emit(
        vm_script.SMOKE_MARK,
        {
            "runtime": "tvmjs-chromium-webgpu",
            "device": result["adapter"],
            "prompt_tokens": len(ids),
            "generated_tokens": generated,
            "output": tokenizer.decode(generated),
            "prefill_tok_s": vm_script._rate(len(ids), float(result["prefill_s"])),
            "decode_tok_s": vm_script._rate(len(generated), float(result["decode_s"])),
            "logits_shape": [int(result["vocab"])],
            "vocab_size": vocab,
            "logits_ok": int(result["vocab"]) == vocab,
            "finite": bool(result["finite"]),
        },
    )


def main(argv: list[str]) -> None:
    if argv[:1] == ["library"] and len(argv) == 2:
        library(argv[1])
    elif argv[:1] == ["logits"] and len(argv) in (5, 6):
        logits(*argv[1:])
    elif argv[:1] == ["run"] and len(argv) == 5:
        run(argv[1], argv[2], argv[3], int(argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
