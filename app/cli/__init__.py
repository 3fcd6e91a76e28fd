"""The ``shrinkwise`` command line: one typer sub-app per area, printed with rich."""
