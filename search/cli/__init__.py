"""The ``hpsearch`` command (``python -m search.cli`` runs it too).

- ``commands``: the commands and their options, each handing its work to the package that does
  it (``search.workers``, ``search.results``, ...).
- ``console``: logging, the tables' output, one-line errors, and what a stop signal does.
- ``validation``: what ``hpsearch validate`` prints.
"""

from search.cli.commands import cli, main

__all__ = ["cli", "main"]
