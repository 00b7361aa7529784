"""Options shared by several commands, so that one spelling means one thing in every
command (the option table in docs/cli.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from factory.store.choice import DEFAULT_MATRIX

if TYPE_CHECKING:
    from factory.trust.policy import Trust

MatrixOption = Annotated[Path, typer.Option("--matrix", "-m", help="Matrix manifest, e.g. manifests/world.yaml")]
OnlyOption = Annotated[
    list[str] | None, typer.Option("--only", help="Keep cells whose MODEL/QUANT/TARGET matches this glob.")
]
SkipOption = Annotated[
    list[str] | None, typer.Option("--skip", help="Leave out cells whose MODEL/QUANT/TARGET matches this glob.")
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="FACTORY_STORE",
        help="file://PATH, a plain path, or s3://BUCKET/PREFIX [default: the manifest's]",
    ),
]
StoreMatrixOption = Annotated[
    Path | None,
    typer.Option(
        "--matrix", "-m", help=f"Without --store, use this manifest's `store:` [default: {DEFAULT_MATRIX}, if present]."
    ),
]
EndpointOption = Annotated[
    str | None, typer.Option("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL, else AWS).")
]
TrustOption = Annotated[
    list[str] | None,
    typer.Option(
        "--trust",
        help="A trusted public key (ed25519:...) or a file of them; repeatable. "
        "[default: FACTORY_TRUST, else ~/.config/factory/trusted-keys]",
    ),
]
MlcSourceOption = Annotated[
    Path | None,
    typer.Option(
        "--mlc-llm-source",
        envvar="FACTORY_MLC_LLM_SOURCE",
        help="Wheel toolchains: a local mlc-llm archive (.tar.gz) or checkout at the pinned commit "
        "(default: download GitHub's archive of the commit).",
    ),
]

WheelhouseOption = Annotated[
    Path | None,
    typer.Option(
        "--wheelhouse",
        envvar="FACTORY_WHEELHOUSE",
        help="Toolchain images: a folder of wheels pip may install from (offline builders).",
    ),
]
OfflineOption = Annotated[
    bool,
    typer.Option("--offline", envvar="FACTORY_OFFLINE", help="Toolchain images: pip installs only from --wheelhouse."),
]


def retired(spelling: str, instead: str) -> Callable[[object], object]:
    """A callback for a hidden option that only says what replaced it: the same
    letter or name means one thing in every command."""

    def refuse(value: object) -> object:
        if value not in (None, [], ()):
            raise typer.BadParameter(f"{spelling} is no longer accepted here; use {instead}")
        return value

    return refuse


def trusted(keys: list[str] | None) -> Trust | None:
    """--trust, else FACTORY_TRUST, else the trust file; None when nothing is configured."""
    from factory.trust.policy import load_trust

    return load_trust(keys)
