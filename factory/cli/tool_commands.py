"""Tools around one bundle or file: run a prompt through a bundle; make a tokenizer or an example model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from factory.cli.app import app, reports_errors
from factory.cli.options import retired
from factory.cli.render import echo_lines, example_model_lines, run_lines, tokenizer_lines

PANEL = "Toolchains and tools"

tokenizer_app = typer.Typer(help="Build and check tokenizer files on their own.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer", rich_help_panel=PANEL)


@tokenizer_app.command("rwkv-world")
@reports_errors
def tokenizer_rwkv_world(
    output: Annotated[Path, typer.Option("--output-file", "-o", help="The file to write (tokenizer_model).")],
    vocab: Annotated[
        Path | None, typer.Option("--vocab", help="RWKV vocab file (default: the one the `rwkv` package ships).")
    ] = None,
    tokenizers_cpp: Annotated[
        str | None,
        typer.Option(
            "--tokenizers-cpp", help="Check with the encoder of this tokenizers-cpp commit (default: current)."
        ),
    ] = None,
    _output: Annotated[
        str | None,
        typer.Option("--output", hidden=True, callback=retired("--output", "--output-file FILE (or -o FILE)")),
    ] = None,
) -> None:
    """Make MLC's RWKV World `tokenizer_model` from the upstream vocab and run the conformance check.

    The file is written only if the check passes."""
    from factory.tokenizer.rwkv_world import make_tokenizer_file

    echo_lines(tokenizer_lines(make_tokenizer_file(output, vocab=vocab, tokenizers_cpp=tokenizers_cpp)))


@app.command("run", rich_help_panel=PANEL)
@reports_errors
def run_command(
    bundle: Annotated[
        Path, typer.Argument(help="A CPU, Vulkan, CUDA or WebGPU bundle folder (factory build --out, or factory pull).")
    ],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What the user says.")] = "Hello",
    tokens: Annotated[int, typer.Option("--tokens", "-n", min=1, help="Tokens to generate (greedy).")] = 16,
    raw: Annotated[bool, typer.Option("--raw", help="Feed --prompt as is, without the conversation template.")] = False,
    on_host: Annotated[
        bool, typer.Option("--on-host", help="Use this machine's TVM instead of the toolchain image.")
    ] = False,
    image: Annotated[str | None, typer.Option("--image", help="Toolchain image (default: the bundle's).")] = None,
) -> None:
    """Run a prompt through a CPU, Vulkan, CUDA or WebGPU bundle: encode, prefill, decode; print figures."""
    from factory.cells.run_bundle import RunRequest, run_bundle

    result = run_bundle(RunRequest(bundle=bundle, prompt=prompt, tokens=tokens, raw=raw, on_host=on_host, image=image))
    echo_lines(run_lines(result))
    if result.verdict.failed:
        from factory.cells.gates import GateFailure

        raise typer.Exit(GateFailure.exit_code)  # the figures are printed; unusable logits fail like the gate


@app.command("example-model", rich_help_panel=PANEL)
@reports_errors
def example_model_command(
    folder: Annotated[Path, typer.Argument(help="The folder to write (new, empty, or holding this model already).")],
    version: Annotated[
        int,
        typer.Option("--version", min=4, max=7, help="RWKV generation: 4 (World), 5 (Eagle), 6 (Finch) or 7 (Goose)."),
    ] = 6,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the random weights.")] = 0,
) -> None:
    """Write a tiny RWKV World checkpoint (Hugging Face layout, 17 MB (RWKV-7: 34 MB) of random weights in
    exact 4-bit groups) for a first build: manifests/example.yaml builds it."""
    from factory.checkpoints.example import write_example_model

    echo_lines(example_model_lines(write_example_model(folder, version=version, seed=seed)))
