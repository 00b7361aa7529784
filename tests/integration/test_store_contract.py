"""One contract suite for every store backend: the local folder, a moto S3
server and a Ceph RGW, with the fault cases publishing and pulling must survive."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from factory.errors import FactoryError, IntegrityError
from factory.store.backends import Store, open_store
from factory.store.backends.base import PreconditionFailed, StoreAccessError, StoreError, blob_key
from factory.store.index import read_index
from factory.store.publish import publish
from factory.store.pull import pull
from tests.support.bundles import make_bundle
from tests.support.s3servers import S3Server, moto_server, rgw_server

if TYPE_CHECKING:
    from factory.store.backends.s3 import S3Store

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def moto() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


@pytest.fixture(params=["local", "moto", "rgw"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    if request.param == "local":
        return f"file://{tmp_path / 'store'}", None
    server: S3Server = request.getfixturevalue("moto") if request.param == "moto" else rgw_server()
    return f"s3://{_fresh_bucket(server, monkeypatch)}/releases", server


def _fresh_bucket(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on `server`, with the environment pointing boto3 (so every store) at the server."""
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    bucket = f"factory-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    return bucket


def _fresh_s3_store(server: S3Server, monkeypatch: pytest.MonkeyPatch, prefix: str) -> S3Store:
    """An S3Store on a new bucket of `server` that reads blobs in ranges of 1 MiB, so that
    a blob of a few MiB takes several."""
    from factory.store.backends.s3 import S3Store

    store = S3Store(_fresh_bucket(server, monkeypatch), prefix)
    store.range_part = 1 << 20
    return store


@pytest.fixture
def store(backend: tuple[str, Any]) -> Store:
    return open_store(backend[0])


def _pull(store: Store, tmp_path: Path, out: str, version: str | None = None) -> Any:
    return pull(
        store, "rwkv-5-world-tiny", "q4f16_1", "cuda-sm80", version=version, out=tmp_path / out, cache=tmp_path / "c"
    )


def _blob(tmp_path: Path, data: bytes) -> tuple[str, Path]:
    path = tmp_path / f"blob-{hashlib.sha256(data).hexdigest()[:8]}"
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), path


def test_blobs_are_content_addressed_and_resumable(store: Store, tmp_path: Path) -> None:
    digest, path = _blob(tmp_path, b"abc" * 10000)
    assert store.missing_blobs({digest}) == {digest}
    store.put_blob(digest, path)
    assert store.has_blob(digest) and store.blob_size(digest) == 30000
    assert store.missing_blobs({digest, "0" * 64}) == {"0" * 64}
    partial = tmp_path / "partial"
    partial.write_bytes(b"abc" * 4000)  # an interrupted download: the rest is appended
    store.get_blob(digest, partial)
    assert partial.read_bytes() == path.read_bytes()
    with pytest.raises(StoreError):
        store.get_blob("1" * 64, tmp_path / "none")


def test_conditional_document_writes(store: Store) -> None:
    etag = store.put_doc("index.json", b"{}", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_doc("index.json", b"{}", if_none_match=True)
    newer = store.put_doc("index.json", b'{"a": 1}', if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put_doc("index.json", b'{"a": 2}', if_match=etag)
    doc = store.get_doc("index.json")
    assert doc is not None and doc.data == b'{"a": 1}' and doc.etag == newer
    assert store.get_doc("missing.json") is None


def test_publish_then_pull_gives_a_folder_tvm_loads(store: Store, tmp_path: Path) -> None:
    from tvm.contrib import tvmjs

    bundle = make_bundle(tmp_path / "dist")
    report = publish(store, [bundle])
    assert report.bundles == ("rwkv-5-world-tiny/q4f16_1/cuda-sm80",) and report.uploaded_blobs > 3
    pulled = pull(
        store, "rwkv-5-world-tiny", "q4f16_1", "cuda-sm80", version=None, out=tmp_path / "out", cache=tmp_path / "c"
    )
    assert pulled.path == tmp_path / "out" / "rwkv-5-world-tiny-q4f16_1-cuda-sm80"
    import tvm

    tensors, _ = tvmjs.load_tensor_cache(str(pulled.path), tvm.cpu())
    original, _ = tvmjs.load_tensor_cache(str(bundle), tvm.cpu())
    assert sorted(tensors) == sorted(original)
    for name in tensors:
        assert (tensors[name].numpy() == original[name].numpy()).all()
    assert pulled.run.startswith(f"mlc_llm chat {pulled.path} --model-lib {pulled.path}/")
    # Pulled from the cache: hard links, no second download.
    again = pull(
        store, "rwkv-5-world-tiny", "q4f16_1", "cuda-sm80", version=None, out=tmp_path / "out2", cache=tmp_path / "c"
    )
    assert again.downloaded_bytes == 0


def test_publishing_again_uploads_nothing_and_a_second_target_only_its_library(store: Store, tmp_path: Path) -> None:
    first = make_bundle(tmp_path / "dist")
    publish(store, [first])
    assert publish(store, [first]).uploaded_blobs == 0
    second = make_bundle(tmp_path / "dist", target="cuda-sm90", params_from=first)
    report = publish(store, [second])
    library = second / "rwkv-5-world-tiny-q4f16_1-cuda-sm90.so"
    assert (report.uploaded_blobs, report.uploaded_bytes) == (1, library.stat().st_size)
    index, _ = read_index(store)
    assert set(index.bundles) == {"rwkv-5-world-tiny/q4f16_1/cuda-sm80", "rwkv-5-world-tiny/q4f16_1/cuda-sm90"}


def _rebuilt_elsewhere(tmp_path: Path, folder: str, *, build_key: str) -> Path:
    """The same cell built again on another machine: other time and host, other library
    bytes (compilers are not bit-reproducible), the same or another build key."""
    bundle = make_bundle(tmp_path / folder, seed=0)
    library = bundle / "rwkv-5-world-tiny-q4f16_1-cuda-sm80.so"
    library.write_bytes(b"rebuilt on a fresh runner" * 100)
    data = json.loads((bundle / "factory-bundle.json").read_text())
    data["files"] = [
        {**f, "size": library.stat().st_size, "sha256": hashlib.sha256(library.read_bytes()).hexdigest()}
        if f["role"] == "library" else f
        for f in data["files"]
    ]  # fmt: skip
    data["provenance"].update(build_key=build_key, built_at="2031-01-01T00:00:00Z", host="runner-2")
    (bundle / "factory-bundle.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return bundle


def test_republishing_the_same_build_key_from_another_machine_is_a_no_op(store: Store, tmp_path: Path) -> None:
    first = make_bundle(tmp_path / "dist")
    publish(store, [first], index=False)
    key = "bundles/rwkv-5-world-tiny/q4f16_1/cuda-sm80/1.0.0.json"
    stored = store.get_doc(key)
    assert stored is not None
    rebuilt = _rebuilt_elsewhere(tmp_path, "again", build_key="key-rwkv-5-world-tiny-q4f16_1-cuda-sm80-0")
    report = publish(store, [rebuilt])
    assert report.already == ("rwkv-5-world-tiny/q4f16_1/cuda-sm80",)
    assert report.uploaded_blobs == 0, "a bundle already published under its build key uploads nothing"
    again = store.get_doc(key)
    assert again is not None and again.data == stored.data, "the first published manifest stays"
    index, _ = read_index(store)
    record = index.bundles["rwkv-5-world-tiny/q4f16_1/cuda-sm80"].versions["1.0.0"]
    assert record.sha256 == hashlib.sha256(stored.data).hexdigest(), "the index points at the stored bytes"
    pulled = _pull(store, tmp_path, "out")
    assert (pulled.path / "rwkv-5-world-tiny-q4f16_1-cuda-sm80.so").read_bytes() == (
        first / "rwkv-5-world-tiny-q4f16_1-cuda-sm80.so"
    ).read_bytes()


def test_another_build_key_at_a_published_version_is_refused(store: Store, tmp_path: Path) -> None:
    publish(store, [make_bundle(tmp_path / "dist")])
    other = _rebuilt_elsewhere(tmp_path, "other", build_key="another-key")
    with pytest.raises(FactoryError, match="already published from build key key-rwkv") as caught:
        publish(store, [other])
    assert "another-key" in str(caught.value) and "bump release.version" in (caught.value.hint or "")


class Crashing:
    """A store whose process dies (KeyboardInterrupt, as SIGINT) after `after` blob uploads."""

    def __init__(self, inner: Store, after: int) -> None:
        self.inner, self.after, self.url = inner, after, inner.url
        self.lock = threading.Lock()

    def put_blob(self, *args: Any, **kwargs: Any) -> None:
        with self.lock:
            if self.after == 0:
                raise KeyboardInterrupt
            self.after -= 1
        self.inner.put_blob(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("damaged", ["library", "shard"])
def test_a_file_changed_after_its_manifest_is_refused_and_never_reaches_the_store(
    store: Store, backend: tuple[str, Any], tmp_path: Path, damaged: str
) -> None:
    """Publish hashes each blob while reading it for the upload: a file whose bytes differ
    from its manifest (same size) is refused before its blob exists, nothing is indexed,
    and on S3 no multipart upload is left open. The 70 MB library crosses the multipart
    threshold; the shard is a single PUT."""
    bundle = make_bundle(tmp_path / "dist", library_megabytes=70)
    manifest = json.loads((bundle / "factory-bundle.json").read_text())
    entry = next(
        f for f in manifest["files"] if (f["path"].endswith(".so") if damaged == "library" else "shard" in f["path"])
    )
    path = bundle / entry["path"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last byte: the one read that would complete the upload
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"{entry['path']}: sha256 differs from the manifest"):
        publish(store, [bundle], jobs=2)
    assert store.blob_size(entry["sha256"]) is None
    assert list(store.list_keys("bundles/")) == []
    assert read_index(store)[0].bundles == {}
    if backend[1] is not None:
        bucket = backend[0].removeprefix("s3://").split("/")[0]
        uploads = backend[1].client().list_multipart_uploads(Bucket=bucket)
        assert uploads.get("Uploads", []) == []


def test_a_publisher_killed_mid_upload_then_rerun_loses_and_duplicates_nothing(store: Store, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "dist", megabytes=3)
    with pytest.raises(KeyboardInterrupt):
        publish(Crashing(store, after=2), [bundle], jobs=1)
    index, _ = read_index(store)
    assert index.bundles == {}, "nothing is indexed before all its blobs are in place"
    assert list(store.list_keys("bundles/")) == []
    report = publish(store, [bundle])
    files = json.loads((bundle / "factory-bundle.json").read_text())["files"]
    digests = {f["sha256"] for f in files}
    assert report.present_blobs == 2 and report.uploaded_blobs == len(digests) - 2
    assert sorted(store.list_keys("blobs/")) == sorted(blob_key(d) for d in digests)
    index, _ = read_index(store)
    assert index.bundles["rwkv-5-world-tiny/q4f16_1/cuda-sm80"].latest == "1.0.0"


def test_racing_publishers_keep_every_index_entry(backend: tuple[str, Any], tmp_path: Path) -> None:
    bundles = [make_bundle(tmp_path / "dist", target=f"t{i}", seed=i, megabytes=0.1) for i in range(6)]
    errors: list[BaseException] = []

    def run(bundle: Path) -> None:
        try:
            publish(open_store(backend[0]), [bundle], jobs=2)  # each publisher has its own client
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in bundles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    index, _ = read_index(open_store(backend[0]))
    assert set(index.bundles) == {f"rwkv-5-world-tiny/q4f16_1/t{i}" for i in range(6)}


def _tamper(store: Store, backend: tuple[str, Any], digest: str, data: bytes) -> None:
    url, server = backend
    if server is None:
        path = Path(url.removeprefix("file://")) / blob_key(digest)
        path.write_bytes(data)
    else:
        bucket = url.removeprefix("s3://").split("/")[0]
        server.client().put_object(Bucket=bucket, Key=f"releases/{blob_key(digest)}", Body=data)


def test_a_tampered_blob_fails_the_pull_naming_the_file_and_makes_nothing(
    store: Store, backend: tuple[str, Any], tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path / "dist")
    publish(store, [bundle])
    shard = next(
        f for f in json.loads((bundle / "factory-bundle.json").read_text())["files"] if f["role"] == "params-shard"
    )
    data = bytearray((bundle / shard["path"]).read_bytes())
    data[100] ^= 0xFF
    _tamper(store, backend, shard["sha256"], bytes(data))
    with pytest.raises(IntegrityError) as caught:
        pull(
            store, "rwkv-5-world-tiny", "q4f16_1", "cuda-sm80", version=None, out=tmp_path / "out", cache=tmp_path / "c"
        )
    assert shard["path"] in caught.value.message
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "c" / "blobs" / "sha256" / shard["sha256"][:2] / shard["sha256"][2:]).exists()


class Recording:
    def __init__(self, inner: Store) -> None:
        self.inner, self.url, self.fetched = inner, inner.url, 0
        self.lock = threading.Lock()

    def get_blob(self, digest: str, dest: Path, progress: Any = None, hasher: Any = None) -> None:
        before = dest.stat().st_size if dest.exists() else 0
        self.inner.get_blob(digest, dest, progress, hasher)
        with self.lock:  # pull downloads in parallel
            self.fetched += dest.stat().st_size - before

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_truncated_download_is_resumed(store: Store, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "dist")
    publish(store, [bundle])
    files = json.loads((bundle / "factory-bundle.json").read_text())["files"]
    shard = next(f for f in files if f["role"] == "params-shard")
    partial = tmp_path / "c" / "partial" / f"{shard['sha256']}.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes((bundle / shard["path"]).read_bytes()[: shard["size"] // 2])
    recording = Recording(store)
    pulled = pull(
        recording,
        "rwkv-5-world-tiny", "q4f16_1", "cuda-sm80", version=None, out=tmp_path / "out", cache=tmp_path / "c",
    )  # fmt: skip
    total = sum(f["size"] for f in {f["sha256"]: f for f in files}.values())
    assert recording.fetched == total - shard["size"] // 2
    assert (pulled.path / shard["path"]).read_bytes() == (bundle / shard["path"]).read_bytes()


def test_a_path_traversal_name_is_rejected_on_publish_and_on_pull(store: Store, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "dist")
    manifest_path = bundle / "factory-bundle.json"
    good = manifest_path.read_text()
    evil = json.loads(good)
    evil["files"][0]["path"] = "../../escaped"
    manifest_path.write_text(json.dumps(evil))
    with pytest.raises(IntegrityError, match=r"unsafe file path '\.\./\.\./escaped'"):
        publish(store, [bundle])
    # A manifest that reached the store some other way is refused by pull before any write.
    manifest_path.write_text(good)
    publish(store, [bundle])
    key = "bundles/rwkv-5-world-tiny/q4f16_1/cuda-sm80/1.0.0.json"
    body = json.dumps(evil).encode()
    store.delete(key)
    store.put_doc(key, body)
    _edit_record(store, manifest=key, sha256=hashlib.sha256(body).hexdigest())
    with pytest.raises(IntegrityError, match="unsafe file path"):
        _pull(store, tmp_path, "o")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "o").exists()


def _edit_record(store: Store, **fields: Any) -> None:
    """Change the index record of the test bundle's 1.0.0 by hand, as a tamperer would."""
    doc = store.get_doc("index.json")
    assert doc is not None
    index = json.loads(doc.data)
    index["bundles"]["rwkv-5-world-tiny/q4f16_1/cuda-sm80"]["versions"]["1.0.0"].update(fields)
    store.put_doc("index.json", json.dumps(index).encode(), if_match=doc.etag)


class Reads:
    """Records every document and blob a store is asked for."""

    def __init__(self, inner: Store) -> None:
        self.inner, self.url, self.keys = inner, inner.url, list[str]()

    def get_doc(self, key: str) -> Any:
        self.keys.append(key)
        return self.inner.get_doc(key)

    def get_blob(self, digest: str, *args: Any, **kwargs: Any) -> None:
        self.keys.append(blob_key(digest))
        self.inner.get_blob(digest, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("key", ["../x.json", "bundles/../../x.json", "/etc/passwd", "bundles/other/q/t/1.0.0.json"])
def test_an_index_record_pointing_outside_the_layout_is_refused_before_any_read(
    store: Store, tmp_path: Path, key: str
) -> None:
    from factory.store.documents import DocumentError

    publish(store, [make_bundle(tmp_path / "dist")])
    (tmp_path / "x.json").write_text("{}")  # what a local store would read for ../x.json
    _edit_record(store, manifest=key)
    reads = Reads(store)
    with pytest.raises(DocumentError) as caught:
        _pull(reads, tmp_path, "o")
    assert reads.keys == ["index.json"], "nothing but the index was read"
    rendered = caught.value.render()
    assert f"{store.url}/index.json" in rendered and repr(key) in rendered and "fix:" in rendered
    assert caught.value.exit_code == 4 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("key", ["../x.json", "a/../../x", "/abs", "a//b", ".hidden", "a\\b", ""])
def test_every_backend_refuses_a_key_outside_its_layout_before_any_io(store: Store, key: str) -> None:
    for call in (
        lambda: store.get_doc(key),
        lambda: store.put_doc(key, b"{}"),
        lambda: store.delete(key),
        lambda: list(store.list_keys(key)),
    ):
        with pytest.raises(IntegrityError, match="not a key of the store layout"):
            call()


def test_yank_moves_latest_back_and_gc_removes_only_unreferenced_blobs(store: Store, tmp_path: Path) -> None:
    from factory.store.housekeeping import gc, yank

    publish(store, [make_bundle(tmp_path / "v1", version="1.0.0", seed=1)])
    publish(store, [make_bundle(tmp_path / "v2", version="1.1.0", seed=2)])
    name = "rwkv-5-world-tiny/q4f16_1/cuda-sm80"
    assert read_index(store)[0].bundles[name].latest == "1.1.0"
    yank(store, name, "1.1.0", "bad weights")
    entry = read_index(store)[0].bundles[name]
    assert entry.latest == "1.0.0" and entry.versions["1.1.0"].yank_reason == "bad weights"
    pulled = pull(
        store, "rwkv-5-world-tiny", "q4f16_1", "cuda-sm80", version=None, out=tmp_path / "o", cache=tmp_path / "c"
    )
    assert pulled.version == "1.0.0"
    yanked = pull(
        store, "rwkv-5-world-tiny", "q4f16_1", "cuda-sm80", version="1.1.0", out=tmp_path / "y", cache=tmp_path / "c"
    )
    assert yanked.version == "1.1.0"  # yank withdraws, never deletes
    digest, path = _blob(tmp_path, b"orphan")
    store.put_blob(digest, path)
    later = time.time() + 2 * 86400  # past the default grace period
    dry = gc(store, delete=False, now=later)
    assert dry.unreferenced == (digest,) and store.has_blob(digest)
    assert gc(store, delete=True, now=later).unreferenced == (digest,)
    assert not store.has_blob(digest)
    assert gc(store, delete=False, now=later).unreferenced == ()


def test_gc_delete_keeps_the_blobs_of_a_publish_still_running(store: Store, tmp_path: Path) -> None:
    """A publish uploads blobs before the manifest that references them: until then they
    are unreferenced, and only their age tells gc to leave them alone."""
    from factory.store.housekeeping import gc

    publish(store, [make_bundle(tmp_path / "done", version="1.0.0", seed=1)])
    running = make_bundle(tmp_path / "running", version="1.1.0", seed=2, megabytes=0.1)
    files = json.loads((running / "factory-bundle.json").read_text())["files"]
    uploaded = store.missing_blobs({f["sha256"] for f in files})  # some are shared with 1.0.0
    assert uploaded
    for digest in uploaded:
        store.put_blob(digest, running / next(f["path"] for f in files if f["sha256"] == digest))
    report = gc(store, delete=True)
    assert report.unreferenced == () and set(report.young) == uploaded
    assert store.missing_blobs(uploaded) == set()
    publish(store, [running])  # the publish finishes: its manifest now references them
    assert gc(store, delete=True, grace=0).unreferenced == ()
    # Without a grace period the same moment would have cost the running publish its blobs.
    digest, path = _blob(tmp_path, b"uploaded a moment ago")
    store.put_blob(digest, path)
    assert gc(store, delete=True, grace=0).unreferenced == (digest,) and not store.has_blob(digest)


def test_list_objects_gives_size_and_write_time(store: Store, tmp_path: Path) -> None:
    before = time.time()
    digest, path = _blob(tmp_path, b"x" * 1234)
    store.put_blob(digest, path)
    [stored] = list(store.list_objects("blobs/"))
    assert stored.key == blob_key(digest) and stored.size == 1234
    assert before - 5 <= stored.modified <= time.time() + 5


def test_wrong_credentials_on_rgw_are_a_clear_access_error_without_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = rgw_server()
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    from factory.store.backends.s3 import S3Store

    store = S3Store("any-bucket", "p")
    with pytest.raises(StoreAccessError) as caught:
        publish(store, [make_bundle(tmp_path / "dist", megabytes=0.1)])
    assert "refused our credentials (SignatureDoesNotMatch)" in caught.value.message
    assert "not-the-secret" not in caught.value.render()
    assert store.requests_sent <= 2


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_local_disk_and_a_cancel_pass_through_every_backend_unchanged(store: Store, tmp_path: Path) -> None:
    """The caller must tell its own disk (or its own cancel) from a store failure."""
    import errno

    from factory.store.backends.base import LocalWriteError, TransferCancelled

    digest, path = _blob(tmp_path, b"z" * 100_000)
    store.put_blob(digest, path)
    with pytest.raises(LocalWriteError) as caught:
        store.get_blob(digest, Path("/dev/full"))  # every write: ENOSPC
    assert caught.value.error.errno == errno.ENOSPC

    def cancel(_: int) -> None:
        raise TransferCancelled

    with pytest.raises(TransferCancelled):
        store.get_blob(digest, tmp_path / "part", cancel)


@pytest.mark.parametrize("direct", [True, False], ids=["http.client", "botocore"])
@pytest.mark.parametrize("server_name", ["moto", "rgw"])
def test_a_large_blob_arrives_in_parallel_ranges_in_order_and_resumes(
    server_name: str, direct: bool, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 downloads fetch ranges in parallel but hand them on in order: the partial file is
    always a prefix of the blob (so an interrupted pull resumes) and the hash is one pass.
    Both range paths: presigned GETs over http.client, and botocore's (kept for proxies)."""
    import math
    import os

    from factory.store.backends.base import TransferCancelled

    server: S3Server = request.getfixturevalue("moto") if server_name == "moto" else rgw_server()
    store = _fresh_s3_store(server, monkeypatch, "ranges")
    store.range_window, store.direct_ranges = 3, direct
    data = os.urandom(5_000_123)
    digest, path = _blob(tmp_path, data)
    store.put_blob(digest, path)

    def fetch(dest: Path, progress: Any = None) -> tuple[int, str]:
        before, hasher = store.requests_sent, hashlib.sha256(dest.read_bytes() if dest.exists() else b"")
        store.get_blob(digest, dest, progress, hasher)
        return store.requests_sent - before, hasher.hexdigest()

    whole = tmp_path / "whole"
    requests, seen = fetch(whole)
    assert whole.read_bytes() == data and seen == digest
    assert requests == math.ceil(len(data) / store.range_part)  # one GET per range, no HEAD

    # Stopped after the second part arrived: what is on disk is exactly the blob's first bytes.
    stopped, moved = tmp_path / "stopped", []

    def stop_after_two(amount: int) -> None:
        moved.append(amount)
        if len(moved) == 2:
            raise TransferCancelled

    with pytest.raises(TransferCancelled):
        fetch(stopped, stop_after_two)
    kept = stopped.read_bytes()
    assert len(kept) == 2 * store.range_part and data.startswith(kept)
    progress: list[int] = []
    requests, seen = fetch(stopped, progress.append)
    assert stopped.read_bytes() == data and seen == digest and sum(progress) == len(data) - len(kept)
    assert requests == math.ceil((len(data) - len(kept)) / store.range_part)

    # A blob of one part costs one request, as before; an empty one arrives empty.
    for small in (b"tiny blob", b""):
        digest, path = _blob(tmp_path, small)
        store.put_blob(digest, path)
        before = store.requests_sent
        store.get_blob(digest, tmp_path / f"got-{len(small)}")
        assert (tmp_path / f"got-{len(small)}").read_bytes() == small and store.requests_sent - before == 1


def test_a_range_the_rgw_refuses_mid_blob_is_an_access_error_that_shows_no_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct range path maps the server's refusal like every other call, and never
    puts the presigned URL (it carries a signature) in the error."""
    import os

    store = _fresh_s3_store(rgw_server(), monkeypatch, "refused")
    digest, path = _blob(tmp_path, os.urandom(3 << 20))
    store.put_blob(digest, path)
    presign = store.client.generate_presigned_url
    signed: list[str] = []

    def tampered(*args: Any, **kwargs: Any) -> str:
        url = str(presign(*args, **kwargs))
        signed.append(url)
        return url.replace("X-Amz-Signature=", "X-Amz-Signature=0")

    monkeypatch.setattr(store.client, "generate_presigned_url", tampered)
    dest = tmp_path / "got"
    with pytest.raises(StoreAccessError) as caught:
        store.get_blob(digest, dest)
    assert "refused our credentials (SignatureDoesNotMatch)" in caught.value.message
    assert signed and not any(url.split("?")[1] in caught.value.render() for url in signed)
    assert "X-Amz-Signature" not in caught.value.render()
    # What arrived before the refusal is a prefix: the first part, fetched through botocore.
    assert dest.read_bytes() == path.read_bytes()[: store.range_part]


def test_a_range_url_that_s3_redirects_falls_back_to_botocore_which_follows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS answers a presigned URL for a bucket in another region with a redirect that only
    botocore follows: the range is fetched through botocore instead, and so are the rest."""
    import http.server
    import os

    class Moved(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(301)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = rgw_server()
    store = _fresh_s3_store(server, monkeypatch, "moved")
    data = os.urandom((3 << 20) + 17)
    digest, path = _blob(tmp_path, data)
    store.put_blob(digest, path)
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Moved) as elsewhere:
        threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
        presign = store.client.generate_presigned_url
        moved: list[str] = []

        def redirected(*args: Any, **kwargs: Any) -> str:
            moved.append(str(presign(*args, **kwargs)))
            return moved[-1].replace(server.env()["AWS_ENDPOINT_URL"], f"http://127.0.0.1:{elsewhere.server_port}")

        monkeypatch.setattr(store.client, "generate_presigned_url", redirected)
        store.get_blob(digest, tmp_path / "got")
        elsewhere.shutdown()
    assert (tmp_path / "got").read_bytes() == data
    # Only the ranges already in flight when the first redirect came back went there: 3 followed the first part.
    assert 1 <= len(moved) <= store.range_window < 3 and store.direct_ranges is False
