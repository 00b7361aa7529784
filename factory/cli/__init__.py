"""The `factory` command line. Thin: each command parses its arguments, calls one
function of the factory and prints its result with `render`; errors become exit codes
in `app.reports_errors`.

app.py                   the application, error reporting, --version
options.py               options shared by several commands
render.py                everything printed: tables, summaries, report lines
plan_commands.py         plan, lock, schema
build_command.py         build
store_commands.py        publish, pull, ls, verify
store_admin_commands.py  gc, yank, release, keygen, mirror, catalog
image_commands.py        images build, images ls, images metal-env
tool_commands.py         tokenizer rwkv-world, run
schemas.py               the JSON Schemas `factory schema` prints

The top layer: it may import every package, and no package imports it.
"""

from __future__ import annotations

# Importing a command module registers its commands on `app`: --help lists them in
# this order, so it is kept by hand.
# isort: off
from factory.cli import plan_commands, build_command, store_commands, store_admin_commands  # noqa: F401
from factory.cli import image_commands, tool_commands  # noqa: F401

# isort: on
from factory.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app(prog_name="factory")
