"""The catalog page in a real headless Chromium (Debian's package, driven by playwright;
never `playwright install`): what a person sees on a store with several bundles, some
yanked, some without smoke figures; a filter and a sort; pixels of a screenshot. From
file:// and from the Ceph RGW serving the published page over HTTP."""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.bundles import make_bundle
from tests.support.run import factory
from tests.support.stores import make_store

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        message = "no chromium (apt-get install chromium chromium-driver; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh --user-data-dir
            executable_path=CHROMIUM, headless=True, args=ARGS, viewport={"width": 1600, "height": 900},
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


def _smoke(prefill: float, decode: float) -> dict[str, object]:
    return {"status": "passed", "prefill_tok_s": prefill, "decode_tok_s": decode}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """Five bundle versions: measured ones, one with the smoke gate not run, one yanked."""
    tmp = tmp_path_factory.mktemp("catalog")
    dist = tmp / "dist"
    parity = {"status": "passed", "kl_mean": 0.0012, "kl_max": 0.01, "top1": 0.97}
    bundles = [
        make_bundle(dist, target="cuda-sm80", gates={"layout": {"status": "passed"}, "smoke": _smoke(812.5, 43.2),
                                                     "parity": parity}),
        make_bundle(dist, target="cuda-sm90", params_from=dist / "rwkv-5-world-tiny-q4f16_1-cuda-sm80",
                    gates={"layout": {"status": "passed"}, "smoke": _smoke(1530.0, 88.8)}),
        make_bundle(dist, quant="q4f32_1", target="cpu-x86-64", seed=2, megabytes=3,
                    gates={"layout": {"status": "passed"}, "smoke": {"status": "not-run", "reason": "no GPU"}}),
        make_bundle(dist, model="rwkv-6-world-tiny", target="cuda-sm90", seed=3, megabytes=2,
                    gates={"layout": {"status": "failed"}}),
        make_bundle(tmp / "dist2", model="rwkv-6-world-tiny", target="cuda-sm90", seed=4, version="0.9.0",
                    gates={"layout": {"status": "passed"}, "smoke": _smoke(700.0, 30.0)}),
    ]  # fmt: skip
    url = f"file://{tmp / 'store'}"
    # The older version first: one publish indexes one version per bundle name.
    assert factory("publish", str(bundles[-1]), "--store", url).returncode == 0
    assert factory("publish", *map(str, bundles[:-1]), "--store", url).returncode == 0
    yanked = factory("yank", "rwkv-6-world-tiny", "-q", "q4f16_1", "-t", "cuda-sm90", "--version", "0.9.0",
                     "--reason", "NaN on long prompts", "--store", url)  # fmt: skip
    assert yanked.returncode == 0, yanked.stderr
    return url, {}


def _rows(page: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = page.eval_on_selector_all(
        "#catalog tbody tr",
        """rows => rows.map(r => ({name: r.dataset.name, version: r.dataset.version, cls: r.className,
            cells: [...r.children].map(c => c.innerText)}))""",
    )
    return rows


def _pixels(context: Any, png: bytes, colours: dict[str, list[int]]) -> dict[str, int]:
    """How many pixels of the screenshot are each colour (within 3 levels per channel),
    counted by the browser's own canvas: a real pixel check, no image library needed."""
    page = context.new_page()
    try:
        counts: dict[str, int] = page.evaluate(
            """async ([src, colours]) => {
                const img = new Image(); img.src = src; await img.decode();
                const canvas = document.createElement("canvas");
                canvas.width = img.width; canvas.height = img.height;
                const ctx = canvas.getContext("2d"); ctx.drawImage(img, 0, 0);
                const data = ctx.getImageData(0, 0, img.width, img.height).data;
                const counts = {"total": img.width * img.height, "non-white": 0};
                for (const name in colours) counts[name] = 0;
                for (let i = 0; i < data.length; i += 4) {
                    if (data[i] < 245 || data[i + 1] < 245 || data[i + 2] < 245) counts["non-white"]++;
                    for (const [name, [r, g, b]] of Object.entries(colours)) {
                        if (Math.abs(data[i] - r) < 4 && Math.abs(data[i + 1] - g) < 4 && Math.abs(data[i + 2] - b) < 4)
                            counts[name]++;
                    }
                }
                return counts;
            }""",
            ["data:image/png;base64," + base64.b64encode(png).decode(), colours],
        )
    finally:
        page.close()
    return counts


HEADER_BLUE, YANKED_PINK = [0x1F, 0x6F, 0xEB], [0xFF, 0xF1, 0xF0]


def test_the_catalog_shows_every_bundle_filters_sorts_and_renders(
    browser: Any, store: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, _ = store
    made = factory("catalog", "--store", url, "-o", str(tmp_path / "site"))
    assert made.returncode == 0, made.stderr and "5 bundle version(s)" in made.stdout
    data = json.loads((tmp_path / "site" / "catalog.json").read_text())
    assert len(data["entries"]) == 5
    for entry in data["entries"]:
        # The runtime in words, and the repo `factory export` would publish it as.
        assert entry["runtime"].startswith("mlc-llm ") and f"device {entry['device']}" in entry["runtime"]
        assert entry["records"]["hf_repo"] == f"factory/{entry['model']}-{entry['quant']}-MLC"
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto((tmp_path / "site" / "index.html").as_uri())
    page.wait_for_selector("#catalog tbody tr")
    rows = _rows(page)
    assert len(rows) == 5 and not errors
    assert "5 of 5 bundle versions shown (1 yanked)" in page.inner_text("#summary")
    by_key = {(r["name"], r["version"]): r for r in rows}
    measured = by_key[("rwkv-5-world-tiny/q4f16_1/cuda-sm80", "1.0.0")]["cells"]
    assert measured[7:10] == ["812.5", "43.2", "0.0012 / 0.97"]
    assert "smoke: passed" in measured[6] and "parity: passed" in measured[6]
    assert measured[11].startswith(f"factory pull rwkv-5-world-tiny --quant q4f16_1 --target cuda-sm80 --store {url}")
    assert "mlc_llm chat ./rwkv-5-world-tiny-q4f16_1-cuda-sm80 --model-lib" in measured[11]
    unmeasured = by_key[("rwkv-5-world-tiny/q4f32_1/cpu-x86-64", "1.0.0")]["cells"]
    assert unmeasured[7:9] == ["\u2013", "\u2013"] and "smoke: not-run" in unmeasured[6]
    yanked = by_key[("rwkv-6-world-tiny/q4f16_1/cuda-sm90", "0.9.0")]
    assert yanked["cls"] == "yanked" and yanked["cells"][5] == "yanked: NaN on long prompts"
    assert "--version 0.9.0" in yanked["cells"][11]  # not the latest: the command pins it
    assert "layout: failed" in by_key[("rwkv-6-world-tiny/q4f16_1/cuda-sm90", "1.0.0")]["cells"][6]

    # What a person sees: the table is on screen, wide and tall, and the screenshot shows
    # the blue header band and the yanked row's pink band.
    box = page.locator("#catalog").bounding_box()
    assert box is not None and box["width"] > 1000 and box["height"] > 5 * 30
    shot = page.screenshot(path=str(tmp_path / "catalog.png"), full_page=True)
    counts = _pixels(browser, shot, {"header": HEADER_BLUE, "yanked": YANKED_PINK})
    assert counts["non-white"] > counts["total"] * 0.05
    assert counts["header"] > box["width"] * 20 and counts["yanked"] > box["width"] * 10

    # Filter by target, then by model: rows, summary and pixels follow.
    page.select_option("#f-target", "cuda-sm90")
    assert {r["name"] for r in _rows(page)} == {
        "rwkv-5-world-tiny/q4f16_1/cuda-sm90",
        "rwkv-6-world-tiny/q4f16_1/cuda-sm90",
    }
    page.select_option("#f-model", "rwkv-5-world-tiny")
    assert [r["name"] for r in _rows(page)] == ["rwkv-5-world-tiny/q4f16_1/cuda-sm90"]
    assert "1 of 5 bundle versions shown (0 yanked)" in page.inner_text("#summary")
    filtered = _pixels(browser, page.screenshot(full_page=True), {"yanked": YANKED_PINK})
    assert filtered["yanked"] == 0
    # Clear the filters; sort by decode speed (unmeasured last) and by size.
    page.select_option("#f-target", "")
    page.select_option("#f-model", "")
    page.select_option("#sort", "decode-desc")
    decode = [r["cells"][8] for r in _rows(page)]
    assert decode[:3] == ["88.8", "43.2", "30.0"] and decode[3:] == ["\u2013", "\u2013"]
    page.select_option("#sort", "size-desc")
    sizes = [float(r["cells"][4]) for r in _rows(page)]
    assert sizes == sorted(sizes, reverse=True)
    page.close()


def test_the_catalog_published_into_the_rgw_is_served_over_http(
    browser: Any, store: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """A bucket's website serves the page as an object: the page needs nothing else."""
    url, _ = store
    rgw = make_store("rgw", tmp_path)
    assert factory("mirror", url, rgw.url, env=rgw.env).returncode == 0
    made = factory("catalog", "--store", rgw.url, "-o", str(tmp_path / "site"), "--publish", env=rgw.env)
    assert made.returncode == 0, made.stderr
    key = f"{rgw.prefix}/catalog/index.html"
    head = rgw.client.head_object(Bucket=rgw.bucket, Key=key)
    assert head["ContentType"].startswith("text/html")
    # run.html's WebGPU driver beside it, as a script.
    script = rgw.client.head_object(Bucket=rgw.bucket, Key=f"{rgw.prefix}/catalog/webgpu_session.js")
    assert script["ContentType"].startswith("text/javascript")
    link = rgw.client.generate_presigned_url("get_object", Params={"Bucket": rgw.bucket, "Key": key}, ExpiresIn=300)
    page = browser.new_page()
    page.goto(link)
    page.wait_for_selector("#catalog tbody tr")
    assert len(_rows(page)) == 5
    assert rgw.url in page.inner_text("#summary")
    page.close()


def test_a_webgpu_bundle_links_to_the_run_page_with_its_weights_library_and_runtime(
    browser: Any, tmp_path: Path
) -> None:
    from factory.clients.run_page import SESSION_SCRIPT

    bundle = make_bundle(tmp_path / "dist", quant="q4f32_1", target="webgpu", suffix="wasm", device="webgpu:generic",
                         gates={"layout": {"status": "passed"}})  # fmt: skip
    other = make_bundle(tmp_path / "dist", quant="q4f32_1", target="cpu-x86-64", seed=1)
    url = f"file://{tmp_path / 'store'}"
    assert factory("publish", str(bundle), str(other), "--store", url).returncode == 0
    made = factory("catalog", "--store", url, "-o", str(tmp_path / "site"), "--hub-url", "http://hub.test/")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "site" / "run.html").is_file()
    # Beside it the WebGPU driver it shares with the browser gate.
    assert (tmp_path / "site" / "webgpu_session.js").read_bytes() == SESSION_SCRIPT.read_bytes()
    page = browser.new_page()
    page.goto((tmp_path / "site" / "index.html").as_uri())
    page.wait_for_selector("#catalog tbody tr")
    links = page.eval_on_selector_all("a.run", "links => links.map(a => a.getAttribute('href'))")
    [href] = links  # the CPU bundle has no run page
    assert href.startswith("run.html#")
    from urllib.parse import parse_qs

    query = {k: v for k, [v] in parse_qs(href.split("#", 1)[1]).items()}
    assert query == {
        "model": "http://hub.test/factory/rwkv-5-world-tiny-q4f32_1-MLC",
        "model_lib": "libs/rwkv-5-world-tiny/rwkv-5-world-tiny-q4f32_1-webgpu.wasm",
        "runtime": "libs/rwkv-5-world-tiny/rwkv-5-world-tiny-q4f32_1-webgpu.tvmjs.js",
        "name": "rwkv-5-world-tiny/q4f32_1/webgpu",
    }
    # Opened without a bundle in its address, the page says where to open it from.
    page.goto((tmp_path / "site" / "run.html").as_uri())
    page.wait_for_function("document.getElementById('status').className === 'error'")
    assert "open it from the catalog" in page.inner_text("#status")
    page.close()


def test_the_run_pages_tokenizer_is_the_reference_one_on_tokenizer_json(browser: Any, tmp_path: Path) -> None:
    """The run page encodes prompts itself from the bundle's tokenizer.json: the same ids as
    the `rwkv` package's tokenizer on the corpus, and decoding gives the text back."""
    from factory.clients.run_page import RUN_PAGE, SESSION_SCRIPT
    from factory.tokenizer import hf_json
    from factory.tokenizer.rwkv_world import CORPUS, parse_vocab, reference_encoder, upstream_vocab_path

    (tmp_path / "run.html").write_text(RUN_PAGE)
    (tmp_path / SESSION_SCRIPT.name).write_bytes(SESSION_SCRIPT.read_bytes())
    tokenizer = json.loads(hf_json.tokenizer_json(parse_vocab(upstream_vocab_path())))
    page = browser.new_page()
    page.goto((tmp_path / "run.html").as_uri())
    assert page.evaluate("typeof WebGPUSession.session") == "function"  # the driver loads from file:// too
    texts = [*CORPUS, "<|endoftext|> is text here", "\u00e9\u0301 \U0001f600" * 3, ""]
    got = page.evaluate(
        """([json, texts]) => {
            const tokenizer = new WorldTokenizer(json);
            return texts.map((text) => {
                const ids = tokenizer.encode(text);
                const decode = tokenizer.decoder();
                return [ids, ids.map(decode).join("") + decode(null)];
            });
        }""",
        [tokenizer, texts],
    )
    encode = reference_encoder()
    for text, (ids, back) in zip(texts, got, strict=True):
        assert ids == encode(text), text
        assert back == text
    page.close()
