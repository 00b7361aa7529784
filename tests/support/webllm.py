"""WebLLM from npm, bundled for a test page: `@mlc-ai/web-llm` and esbuild at pinned
versions, installed once into the tests' cache and bundled as one browser script that
sets `window.webllm`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

WEBLLM_VERSION = "0.2.86"  # the release FACTS.md's hand run loaded a factory-built wasm with
ESBUILD_VERSION = "0.28.2"
REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("FACTORY_TEST_WEBLLM_CACHE", REPO / ".cache" / "webllm"))
"""Beside the tests' other caches (the wheelhouses), under the repo's ignored .cache/."""


def webllm_script() -> Path:
    """The bundled WebLLM script (built on first use; needs npm and the npm registry)."""
    folder = CACHE / f"webllm-{WEBLLM_VERSION}-esbuild-{ESBUILD_VERSION}"
    script = folder / "webllm.js"
    if script.is_file():
        return script
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed for the WebLLM test (Debian's nodejs/npm)"
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "package.json").write_text('{"name": "factory-webllm-test", "private": true}\n')
    packages = [f"@mlc-ai/web-llm@{WEBLLM_VERSION}", f"esbuild@{ESBUILD_VERSION}"]
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--save-exact", *packages], cwd=staging, check=True,
                   timeout=900, capture_output=True)  # fmt: skip
    (staging / "entry.js").write_text('import * as webllm from "@mlc-ai/web-llm";\nwindow.webllm = webllm;\n')
    esbuild = staging / "node_modules" / ".bin" / "esbuild"
    bundle = ["entry.js", "--bundle", "--format=iife", "--outfile=webllm.js", "--log-level=warning"]
    subprocess.run([str(esbuild), *bundle], cwd=staging, check=True, timeout=600)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return script
