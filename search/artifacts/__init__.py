"""A study's files: its Optuna artifact store, its checkpoints, and each trial's figures.

- ``store``: where the artifact store is, and opening it.
- ``checkpoints``: where interrupted trials keep their checkpoints.
- ``trial_hooks``: the objective's hooks that leave each trial's artifacts in the store.
- ``dashboard_listing``: optuna-dashboard's convention for listing a finished trial's artifacts.
"""
