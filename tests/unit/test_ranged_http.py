"""Which S3 range reads bypass botocore: never one the environment sends through a proxy."""

from __future__ import annotations

import pytest

from factory.store.backends.ranged_http import proxied


def test_a_proxy_for_the_endpoints_scheme_keeps_botocores_path(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    url = "https://bucket.s3.example.com/key?X-Amz-Signature=abc"
    assert not proxied(url)
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    assert proxied(url)
    assert not proxied("http://127.0.0.1:7480/bucket/key?X-Amz-Signature=abc")  # the scheme without a proxy
    monkeypatch.setenv("no_proxy", "s3.example.com")
    assert not proxied(url)
