"""Toolchain images: what one is made of and its content tag (`plan`, pure), the mlc-llm
source it is built from (`sources`), building, listing and pushing it through the Docker
engine (`builder`) and what `factory images` does with a manifest (`manage`).

Sits above the manifest (an image is planned from a manifest and its lock) and below the
plan, which hashes `plan`'s content tags into build keys. May import: the shared modules,
`factory.manifest`, the flows and contracts of `factory.toolchains`, `factory.runners`.
"""
