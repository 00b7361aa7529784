"""TEST ONLY conformance stand-in for mlc_llm (see tests/toolchains/conformance)."""
