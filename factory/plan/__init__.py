"""PURE planning: manifest + lock + selectors -> the build graph with its build keys, and its views.

No side effects: nothing here starts a process, opens a store or talks to an engine (a test
imports the package in a fresh interpreter and checks what came along). Reads only the files
a toolchain image and macOS prefix are made of (their content hashes feed the keys).
May import: the shared modules, `factory.manifest`, `factory.toolchains` (flows, contracts and
the pure image plan).
"""
