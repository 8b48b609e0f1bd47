"""The ``fer-pipeline`` command line: thin typer commands over ``stages`` and ``pipeline``."""
