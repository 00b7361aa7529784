"""Which S3 range reads bypass botocore: never one the environment sends through a proxy,
decided once per store, at its first range."""

from __future__ import annotations

import io
from typing import Any

import pytest

from factory.store.backends import ranged_http
from factory.store.backends.ranged_http import proxied

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY")


def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_a_proxy_for_the_endpoints_scheme_keeps_botocores_path(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_proxies(monkeypatch)
    url = "https://bucket.s3.example.com/key?X-Amz-Signature=abc"
    assert not proxied(url)
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    assert proxied(url)
    assert not proxied("http://127.0.0.1:7480/bucket/key?X-Amz-Signature=abc")  # the scheme without a proxy
    monkeypatch.setenv("no_proxy", "s3.example.com")
    assert not proxied(url)


@pytest.mark.parametrize("first", ["direct", "proxied"])
def test_a_store_decides_its_range_path_once_at_its_first_range(monkeypatch: pytest.MonkeyPatch, first: str) -> None:
    """The endpoint never changes, so the environment is read at the first range only: a
    proxy set (or dropped) after it moves no later range to the other path."""
    from factory.store.backends.s3 import S3Store

    _no_proxies(monkeypatch)
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    proxy = ("https_proxy", "http://proxy.internal:3128")
    if first == "proxied":
        monkeypatch.setenv(*proxy)
    store = S3Store("bucket", "p", endpoint_url="https://s3.example.com")
    asked: list[str] = []

    def counted(url: str) -> bool:
        asked.append(url)
        return proxied(url)

    monkeypatch.setattr(ranged_http, "proxied", counted)
    direct: list[int] = []
    monkeypatch.setattr(ranged_http.RangeReader, "read_into", lambda _, url, start, view: direct.append(start))
    through_botocore: list[str] = []

    def get_object(**kwargs: Any) -> dict[str, Any]:
        through_botocore.append(kwargs["Range"])
        start, stop = (int(n) for n in kwargs["Range"].removeprefix("bytes=").split("-"))
        return {"ContentRange": f"bytes {start}-{stop}/30", "Body": io.BytesIO(bytes(stop - start + 1))}

    monkeypatch.setattr(store.client, "get_object", get_object)
    buffer = memoryview(bytearray(10))
    store._read_range("p/key", 0, 10, buffer)
    if first == "direct":
        monkeypatch.setenv(*proxy)
    else:
        monkeypatch.delenv(proxy[0])
    store._read_range("p/key", 10, 20, buffer)
    store._read_range("p/key", 20, 30, buffer)
    assert len(asked) == 1 and asked[0].startswith("https://s3.example.com/bucket/p/key?")
    if first == "direct":
        assert direct == [0, 10, 20] and through_botocore == []
    else:
        assert direct == [] and through_botocore == ["bytes=0-9", "bytes=10-19", "bytes=20-29"]
