"""Entry point of the ``shrinkwise`` command: routes to the sub-commands, configures logging.

Each area registers its own commands in its own module (``kb``, ``recommend``, ``compress``), so this
file only wires them together.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

app = typer.Typer(
    name="shrinkwise",
    help="How should I compress this model? Explainable recommendations, and compressors that do it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    """Import the sub-command modules; each adds its commands to ``app``."""
    import importlib

    for name in ("kb", "recommend", "compress"):
        try:
            module = importlib.import_module(f"app.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"app.cli.{name}":
                continue  # that area is not built yet
            raise
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=os.environ.get("SHRINKWISE_LOG", "WARNING").upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )
    _register()
    try:
        app(args=argv, prog_name="shrinkwise")
    except SystemExit as exc:
        if exc.code not in (0, None):
            sys.exit(exc.code)
    except Exception as exc:
        fault = _database_fault(exc)
        if fault is None:
            raise
        print(f"shrinkwise: {fault}", file=sys.stderr)  # one line, no traceback
        sys.exit(1)


def _database_fault(exc: Exception) -> Exception | None:
    """The database fault (damaged, too new) that ``exc`` means, if any; None for anything else."""
    if "knowledge.db" not in sys.modules:  # nothing touched the database: not a database fault
        return None
    from knowledge import db

    return db.database_fault(exc)


if __name__ == "__main__":
    main()
