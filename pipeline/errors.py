"""Errors a user can act on. Their message is one line that names the file or clip and the reason.

The CLI prints such a message as one line and exits non-zero; anything else is a bug and shows a
traceback only with ``--debug``.
"""


class PipelineError(Exception):
    """A problem with the user's input, configuration or files (not a bug in the pipeline)."""
