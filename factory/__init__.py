"""factory: pinned MLC-LLM toolchains, RWKV World builds, checksummed bundles."""

__version__ = "0.1.0"
