"""``trinit run|exec|ps|stats|kill|rm``: containers from the command line (docs/cli.md).

``main(argv)`` takes the arguments after ``trinit`` and returns the exit status: the
command's own, or 125/126/127 (:mod:`._errors`).
"""

from ._main import COMMANDS, main

__all__ = ["COMMANDS", "main"]
