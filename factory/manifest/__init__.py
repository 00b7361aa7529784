"""The manifest layer: the matrix manifest, its checks, YAML with line numbers, the lock and its resolvers.

`model` is the manifest's vocabulary (pydantic types, no logic) that every layer above
speaks, the toolchains' flows included. The rest of the package (loading, the cross-checks
that ask each flow what it can build, matrix expansion, the lock) sits above the flows.
May import: the shared modules, `factory.toolchains` (flows and contracts only) and
`factory.runners.engine` (the lock resolver asks the engine for local image ids).
Import names from their modules (`factory.manifest.load`): this file re-exports nothing, so
importing the vocabulary never drags in the loader.
"""
