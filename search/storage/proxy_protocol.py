"""What an hpsearch worker asks ``hpsearch proxy`` beyond Optuna's storage API, carried on that
API's own calls so that Optuna's gRPC proxy passes it through unchanged.

Optuna's ``GrpcStorageProxy`` has no heartbeat and no lock, and its workers no database
connection. The proxy process holds the database (``search.storage.proxy_server``); a worker
(``search.storage.proxy_client``) asks it through four calls whose arguments no Optuna
program makes, each named by a prefix no study file can give a study (a study's name has no
``:``):

- ``get_study_id_from_name(HELLO)``: the protocol's version (Optuna's own proxy answers
  "no such study": it is not hpsearch's).
- ``get_study_id_from_name(LOCK + request)``: take the study's budget lock for a holder, for
  a lease of some seconds; 1 if the holder has it now, 0 if another holds it.
- ``get_study_id_from_name(UNLOCK + request)``: give it back.
- ``set_trial_system_attr(trial_id, HEARTBEAT, None)``: the trial's heartbeat, recorded by the
  database's clock (nothing is stored as an attribute).
- ``get_study_system_attrs(study_id)[AGES]``: ``{trial id: seconds since its last heartbeat or
  None}`` for the study's running trials, by the database's clock.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

VERSION = 1
PREFIX = "hpsearch-proxy:"
HELLO = f"{PREFIX}hello"
LOCK = f"{PREFIX}lock "
UNLOCK = f"{PREFIX}unlock "
HEARTBEAT = f"{PREFIX}heartbeat"
AGES = f"{PREFIX}heartbeat-ages"


@dataclass(frozen=True)
class LockRequest:
    """A worker's request for (or return of) a study's budget lock."""

    study: str
    holder: str
    lease: float  # seconds after which the proxy takes the lock back from a silent holder

    def encode(self, verb: str) -> str:
        return verb + json.dumps(asdict(self))

    @classmethod
    def decode(cls, text: str, verb: str) -> LockRequest:
        return cls(**json.loads(text[len(verb):]))
