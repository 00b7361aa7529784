"""The first four steps of a cell, one function each: `step(ctx, node, out, meta) -> detail`.

fetch      huggingface_hub snapshot at the locked commit (host)
tokenizer  tokenizer_model from the vocab + the conformance check (host)
convert    the flow's convert steps in the toolchain (container or host runner)
compile    the flow's compile steps for one target (container or host runner)

Each builds into `out` (a fresh folder the node cache renames into place on success)
and records what a later step or the bundle's provenance needs in `meta`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from factory.cells.context import BuildContext, StepFailed
from factory.in_toolchain import SCRIPTS_DIR
from factory.plan.graph import Node
from factory.runners import Mount
from factory.store import bundle_folder as bundles
from factory.toolchains import FLOWS
from factory.toolchains.base import (
    CONVERTED,
    KERNEL_CHECK_REPORT,
    SCRIPTS_MOUNT,
    SOURCE_FORMATS,
    needs_kernel_check,
    with_kernel_check,
)


def fetch(ctx: BuildContext, node: Node, out: Path, meta: dict[str, Any]) -> str:
    from factory.cells.fetch import copy_local, fetch_snapshot

    model = ctx.models[str(node.attrs["model"])]
    index = ctx.loaded.manifest.models.index(model)
    dest = out / "model" / model.name
    if model.local is not None:
        copy_local(Path(str(node.attrs["local"])), model.local.format, str(node.attrs["sha256"]), dest,
                   field=f"models[{index}].local.path")  # fmt: skip
        meta["sha256"] = node.attrs["sha256"]
    else:
        assert model.hf is not None
        fetch_snapshot(model.hf.repo, str(node.attrs["revision"]), dest, model.hf.format,
                       field=f"models[{index}].hf.format")  # fmt: skip
    meta["source_format"] = SOURCE_FORMATS[model.weight_format]
    meta["commit"] = node.attrs["revision"]
    return model.weight_format


def tokenizer(ctx: BuildContext, node: Node, out: Path, meta: dict[str, Any]) -> str:
    from factory.tokenizer import hf_json
    from factory.tokenizer import rwkv_world as tok

    vocab_rel = node.attrs.get("vocab_path")
    vocab = ctx.loaded.root / str(vocab_rel) if vocab_rel else tok.upstream_vocab_path()
    commit = node.attrs.get("tokenizers_cpp")
    encoder = tok.runtime_encoder(str(commit) if commit else None, context=f"model {node.attrs['model']}")
    blob = tok.pack(tok.parse_vocab(vocab))
    report = tok.check_tokenizer(blob, encoder=encoder)
    if not report.passed:
        raise tok.explain_failure(report, f"tokenizers-cpp {commit or 'unknown'} (model {node.attrs['model']})")
    tokens = tok.unpack(blob)
    tok.write_tokenizer_model(tokens, out / bundles.TOKENIZER)
    # The same vocab as tokenizer.json, for clients that read only that format; held to
    # the reference through the `tokenizers` package on the same corpus.
    text = hf_json.tokenizer_json(tokens)
    json_check = hf_json.check_tokenizer_json(text, tok.reference_encoder(), tok.CORPUS, len(tokens))
    if not json_check.passed:
        raise tok.TokenizerCheckError(
            "\n".join([json_check.summary(), *json_check.mismatches[:3], *json_check.roundtrip_failures[:3]]),
            hint="the tokenizer.json encoding disagrees with the reference; report it with the texts above",
        )
    (out / hf_json.TOKENIZER_JSON).write_text(text, encoding="utf-8")
    meta["check"] = report.summary()
    meta["json_check"] = json_check.summary()
    meta["encoder"] = encoder
    return f"{report.summary()}; {json_check.summary()}"


def convert(ctx: BuildContext, node: Node, out: Path, meta: dict[str, Any]) -> str:
    model = ctx.models[str(node.attrs["model"])]
    flow = FLOWS[str(node.attrs["flow"])]
    steps = flow.convert_steps(model, str(node.attrs["quant"]), SOURCE_FORMATS[model.weight_format])
    # One conversion serves every target; it runs where this machine can run steps.
    runner_kind = "host" if sys.platform == "darwin" else "container"
    image, image_id = ctx.run_steps(node, steps, runner_kind, (ctx.model_mount(model.name),), out)
    meta.update(image=image, image_id=image_id, argv=[list(s.argv) for s in steps])
    return f"{len(steps)} step(s)"


def compile(ctx: BuildContext, node: Node, out: Path, meta: dict[str, Any]) -> str:
    model = ctx.models[str(node.attrs["model"])]
    flow = FLOWS[str(node.attrs["flow"])]
    quant, target_name = str(node.attrs["quant"]), str(node.attrs["target"])
    target = ctx.loaded.manifest.targets[target_name]
    converted = ctx.cache.path(ctx.dep(node, "convert")) / flow.converted_params(model.name, quant)
    build = ctx.loaded.manifest.toolchains[str(node.attrs["toolchain"])].build
    steps = with_kernel_check(flow.compile_steps(model, quant, target_name, target, build), target)
    mounts = (
        ctx.model_mount(model.name),
        Mount(source=converted, target=CONVERTED),
        Mount(source=SCRIPTS_DIR, target=SCRIPTS_MOUNT),
    )
    image, image_id = ctx.run_steps(node, steps, str(node.attrs["runner"]), mounts, out)
    library = out / flow.compiled_library(model.name, quant, target_name, target)
    if not library.is_file():
        raise StepFailed(f"{node.id}: the compile steps wrote no {library.relative_to(out)}")
    meta.update(image=image, image_id=image_id, argv=[list(s.argv) for s in steps])
    if needs_kernel_check(target):
        # The library gate judges it; a report that is missing is judged there too.
        report = out / KERNEL_CHECK_REPORT
        meta["kernel_check"] = json.loads(report.read_text()) if report.is_file() else None
    return library.name
