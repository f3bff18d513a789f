"""Where studies live: everything that differs between SQLite and PostgreSQL.

- ``address``: a storage URL parsed once (the backend, the SQLite file, how it is shown).
- ``opening``: checking and opening Optuna's RDB storage on it.
- ``locks``: the one lock kind every worker of a storage shares (schema creation, budget).
- ``heartbeats``: running trials that never beat (the one read of Optuna's tables).
- ``outages``: telling a dropped connection from a wrong setting, and waiting one out.
- ``disk_space``: a full disk under SQLite.
- ``optuna_ids``: a study's storage and ids as Optuna keeps them.

A new backend (the gRPC proxy, say) goes here: its address, how it opens, how it locks.
"""
