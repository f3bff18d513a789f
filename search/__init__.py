"""The hpsearch service, grouped by concept as Optuna groups its own packages.

- ``cli``: the ``hpsearch`` command; ``studyfile``: the study file; ``studies``: a stored study;
  ``samplers``: samplers and pruners; ``registry``: the objectives a study file can name;
  ``errors``: the error a user can fix.
- ``storage``: where studies live (every SQLite/PostgreSQL difference).
- ``workers``: running a study (the loop, worker processes, retries, fresh starts).
- ``results``: what a study found (best, tables, compare, report, evaluate, dashboard).
- ``artifacts``: a study's files (the artifact store, checkpoints, each trial's figures).

It knows Optuna, storage, processes and the command line, and finds objectives through
``search.registry``.
"""
