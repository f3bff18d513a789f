"""``python -m search.cli``: the ``hpsearch`` command (workers and fresh starts run it so)."""

from search.cli import main

main()
