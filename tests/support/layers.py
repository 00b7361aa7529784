"""The factory's layers, written in one place, and the import-graph check that holds them.

A module may import modules of its own layer or of a layer below it, never above. A
module's layer is that of the most specific entry below naming it or a package above it
(`factory.manifest.model` is the manifest's vocabulary, lower than the rest of
`factory.manifest`, because the toolchains' flows speak it and the manifest's loader asks
the flows what they can build). Every import counts: at module level, inside functions and
under TYPE_CHECKING. The scripts that run inside a toolchain import nothing of the factory.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

# Low to high.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "shared",
        ("factory", "factory.errors", "factory.process", "factory.paths", "factory.file_lock", "factory.buildkey"),
    ),
    ("in-toolchain scripts", ("factory.in_toolchain",)),
    ("vocabulary", ("factory.manifest.model",)),
    # The tokenizer asks the recorded contracts whether a tokenizers-cpp pin has the trie fix.
    ("checkpoints", ("factory.checkpoints",)),
    # What a bundle needs of the machine and runtime that run it (pure, but for /proc/cpuinfo).
    ("devices", ("factory.devices",)),
    ("flows, runners, tokenizer", ("factory.toolchains", "factory.runners", "factory.tokenizer")),
    ("manifest", ("factory.manifest",)),
    ("toolchain images", ("factory.toolchains.images",)),
    ("plan", ("factory.plan",)),
    # What a store holds and how it is reached (documents, backends, a bundle's files and
    # their checks), below trust, which signs and checks those documents, and below the
    # store's operations, which apply trust.
    (
        "store vocabulary",
        ("factory.store.documents", "factory.store.backends", "factory.store.integrity", "factory.store.bundle_folder"),
    ),
    ("trust", ("factory.trust",)),
    ("store", ("factory.store",)),
    # How other runtimes see bundles: a new client adds a module here and touches no storage.
    ("clients", ("factory.clients",)),
    ("cells", ("factory.cells",)),
    ("cli", ("factory.cli", "factory.__main__")),
)
SELF_CONTAINED = ("factory.in_toolchain",)
"""Shipped into toolchain images as a folder: they may import nothing of the factory."""

# What the pure plan must not bring along (a fresh interpreter imports factory.plan.*).
SIDE_EFFECTS = (
    "docker",
    "boto3",
    "botocore",
    "huggingface_hub",
    "tvm",
    "factory.process",
    "factory.runners",
    "factory.store",
    "factory.trust",
    "factory.clients",
    "factory.cells",
    "factory.cli",
    "factory.manifest.resolvers",
    "factory.toolchains.images.builder",
    "factory.toolchains.images.manage",
    "factory.toolchains.images.sources",
)


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    importer: str
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.importer} imports {self.imported}: {self.why}"


def modules_of(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the `factory` package under root."""
    found = {}
    for path in sorted((root / "factory").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (specificity, layer)
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # The bare package "factory" holds only itself, not every module below it.
            hit = module == prefix if prefix == "factory" else _within(module, prefix)
            if hit and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank)
    return None if best is None else best[1]


def _imports(module: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported factory module) for every import in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in known else target))
    return [(line, name) for line, name in found if _within(name, "factory")]


def check_layers(root: Path) -> list[Violation]:
    modules = modules_of(root)
    known = set(modules)
    problems: list[Violation] = []
    for module, path in modules.items():
        file = str(path.relative_to(root))
        mine = layer_of(module)
        if mine is None:
            problems.append(Violation(file, 1, module, "-", "the module is in no layer: add it to LAYERS"))
            continue
        for line, imported in _imports(module, path, known):
            if any(_within(module, p) for p in SELF_CONTAINED):
                problems.append(
                    Violation(file, line, module, imported, "scripts run inside a toolchain import nothing of it")
                )
                continue
            theirs = layer_of(imported)
            if theirs is not None and theirs > mine:
                problems.append(
                    Violation(
                        file,
                        line,
                        module,
                        imported,
                        f"layer '{LAYERS[mine][0]}' may not import layer '{LAYERS[theirs][0]}' above it",
                    )
                )
    return problems
