"""The RWKV World tokenizer: the upstream vocab -> `tokenizer_model`, and its conformance check.

May import: the shared modules and the recorded toolchain contracts
(`factory.toolchains.contract`: which tokenizers-cpp pins carry the trie fix).
"""
