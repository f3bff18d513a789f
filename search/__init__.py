"""The hpsearch service: command line, study files, storage, study runner and workers.

It knows Optuna, storage, processes and the command line, and finds objectives through
`search.registry`.
"""
