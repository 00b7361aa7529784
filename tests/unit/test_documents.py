"""The store's documents: parsing with clear errors, canonical bytes, layout keys."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from factory.store.bundle_folder import bundle_manifest, write_manifest
from factory.store.documents import (
    BundleFile,
    BundleManifest,
    DocumentError,
    Index,
    IndexRecord,
    ReleaseManifest,
    parse,
)

NAME = "m/q/t"
DIGEST = hashlib.sha256(b"x").hexdigest()


def _manifest_data(**changes: object) -> dict[str, object]:
    data = bundle_manifest(
        cell={"model": "m", "quant": "q", "target": "t", "name": NAME},
        files=[],
        compatibility={"flow": "current", "params_index": "i.json", "device": "cuda", "library": "l.so", "tvm": "abc"},
        provenance={"build_key": "k", "release": {"name": "r", "version": "1.0.0"}, "built_at": "now"},
        gates={"smoke": {"status": "skipped", "prefill_tok_s": None}},
        run="mlc_llm chat {bundle}",
    ).to_data()
    data["files"] = [{"path": "params/a.bin", "role": "params-shard", "size": 1, "sha256": DIGEST}]
    data.update(changes)
    return data


def test_a_written_bundle_manifest_reads_back_to_the_same_bytes(tmp_path: Path) -> None:
    write_manifest(tmp_path, BundleManifest.model_validate(_manifest_data()))
    raw = (tmp_path / "factory-bundle.json").read_bytes()
    manifest = parse(BundleManifest, raw, where="f")
    assert manifest.body() == raw
    assert manifest.files == (BundleFile(path="params/a.bin", role="params-shard", size=1, sha256=DIGEST),)
    assert manifest.version == "1.0.0" and manifest.build_key == "k" and manifest.size == 1
    assert manifest.compatibility.model_extra == {"tvm": "abc"}  # builds may record more
    with pytest.raises(ValueError):
        manifest.files[0].size = 2  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"files": [{"path": "../x", "role": "r", "size": 1, "sha256": DIGEST}]}, "files[0].path", "unsafe file path"),
        ({"files": [{"path": "a", "role": "r", "size": -1, "sha256": DIGEST}]}, "files[0].size", "greater than"),
        ({"name": "m/q/other"}, "", "is not model/quant/target"),
        ({"model": ".."}, "model", "not a plain name"),
        ({"compatibility": {"flow": "current"}}, "compatibility.device", "missing (required)"),
        ({"surprise": 1}, "surprise", "not a field of this document"),
    ],
)
def test_bad_bundle_manifests_name_the_field(change: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(DocumentError) as caught:
        parse(BundleManifest, json.dumps(_manifest_data(**change)).encode(), where="dir/factory-bundle.json")
    problem = caught.value.problems[0]
    assert (problem.file, problem.field) == ("dir/factory-bundle.json", field)
    assert message in problem.message and problem.fix
    assert caught.value.exit_code == 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[1]", "not a JSON object"),
        (b"\xff", "not valid JSON"),
        (b'{"files": []}', "missing, expected 'factory.bundle/v1': this is not a bundle manifest"),
        (b'{"schema": "factory.bundle/v9"}', "not one this factory reads"),
    ],
)
def test_documents_that_are_not_what_they_should_be(data: bytes, message: str) -> None:
    with pytest.raises(DocumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(BundleManifest, data, where="f")


def _record(
    sha: str = DIGEST, at: str = "2026-01-01T00:00:00Z", manifest: str = f"bundles/{NAME}/1.0.0.json"
) -> dict[str, object]:
    return {
        "manifest": manifest,
        "sha256": sha,
        "build_key": "k",
        "compatibility": {"flow": "current", "params_index": "i", "device": "d", "library": "l"},
        "size": 3,
        "published_at": at,
        "yanked": False,
    }


def test_index_updates_keep_the_first_record_and_move_latest() -> None:
    index = Index.empty()
    first = IndexRecord.model_validate(_record())
    index = index.with_bundles({NAME: ("1.0.0", first)})
    again = IndexRecord.model_validate(_record(at="2027-01-01T00:00:00Z"))
    assert (
        index.with_bundles({NAME: ("1.0.0", again)}).bundles[NAME].versions["1.0.0"].published_at == first.published_at
    )
    newer = IndexRecord.model_validate(_record(at="2026-02-01T00:00:00Z", manifest=f"bundles/{NAME}/1.1.0.json"))
    index = index.with_bundles({NAME: ("1.1.0", newer)})
    assert index.bundles[NAME].latest == "1.1.0"
    index = index.with_yank(NAME, "1.1.0", "NaN", "2026-03-01T00:00:00Z")
    assert index.bundles[NAME].latest == "1.0.0" and index.bundles[NAME].versions["1.1.0"].yank_reason == "NaN"
    assert parse(Index, index.body(), where="i") == index


@pytest.mark.parametrize("key", ["../x.json", f"bundles/{NAME}/2.0.0.json", "bundles/evil.json", "/abs.json"])
def test_an_index_record_must_point_where_the_layout_says(key: str) -> None:
    data = {"schema": "factory.index/v1", "bundles": {NAME: {"versions": {"1.0.0": _record(manifest=key)}}}}
    with pytest.raises(DocumentError) as caught:
        parse(Index, json.dumps(data).encode(), where="s3://b/p/index.json")
    assert repr(key) in caught.value.message and f"bundles/{NAME}/1.0.0.json" in caught.value.message


def test_index_names_must_be_plain() -> None:
    data = {"schema": "factory.index/v1", "bundles": {"m/../t": {"versions": {}}}}
    with pytest.raises(DocumentError) as caught:
        parse(Index, json.dumps(data).encode(), where="index.json")
    assert "the key" in caught.value.problems[0].field and "not a bundle name" in caught.value.message


def test_a_release_manifest_lists_bundle_keys_of_its_bundles() -> None:
    bundle = {
        "name": NAME,
        "manifest": "bundles/other/q/t/1.0.0.json",
        "sha256": DIGEST,
        "size": 1,
        "files": 1,
        "compatibility": {"flow": "current", "params_index": "i", "device": "d", "library": "l"},
        "smoke": {"status": None, "prefill_tok_s": None, "decode_tok_s": None},
    }
    data = {"schema": "factory.release/v1", "name": "r", "version": "1", "factory_version": "0", "created_at": "t"}
    with pytest.raises(DocumentError, match="is not a bundle manifest key of m/q/t"):
        parse(ReleaseManifest, json.dumps({**data, "bundles": [bundle]}).encode(), where="r.json")
    bundle["manifest"] = f"bundles/{NAME}/1.json"
    assert (
        parse(ReleaseManifest, json.dumps({**data, "bundles": [bundle]}).encode(), where="r.json").bundles[0].size == 1
    )


@pytest.mark.parametrize(("document", "required"), [("bundle", "files"), ("index", "bundles"), ("release", "bundles")])
def test_factory_schema_prints_each_document_schema(document: str, required: str) -> None:
    from typer.testing import CliRunner

    from factory.cli import app

    result = CliRunner().invoke(app, ["schema", "--document", document])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert "schema" in schema["required"] and required in schema["required"]
    assert schema["additionalProperties"] is False


def test_store_keys_that_could_leave_the_layout_are_always_refused() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    from factory.errors import IntegrityError
    from factory.store.backends.base import check_key

    segment = st.text(alphabet="ab.-_/\\\x00 ", min_size=0, max_size=6)
    plain = st.from_regex(r"[ab_][ab._+-]{0,5}", fullmatch=True)

    @given(st.lists(segment, min_size=1, max_size=5), st.lists(plain, min_size=1, max_size=5))
    def check(parts: list[str], names: list[str]) -> None:
        key = "/".join(parts)
        escapes = any(s in {"", ".", ".."} or s.startswith(".") or "\\" in s or "\x00" in s for s in key.split("/"))
        try:
            accepted = check_key(key) == key
        except IntegrityError:
            accepted = False
        assert not (accepted and escapes), key
        assert check_key("/".join(names)) == "/".join(names)

    check()
