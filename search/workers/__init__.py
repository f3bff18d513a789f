"""Running a study: one worker's loop over its trials, and several worker processes.

- ``run``: create or resume a study and run trials in this process until the budget is spent.
- ``loop``: one worker's loop (the budget lock, stale trials, waiting out the storage).
- ``processes``: ``run --workers K``: K worker processes on this machine.
- ``retries``: trials run again after their worker died or was stopped.
- ``fresh_start``: a worker that starts itself afresh once TensorFlow kept too much memory.
- ``outcomes``: what the trials add up to while running (counts, lines, the failure stop).
- ``progress``: the progress bar and the summary at the end.
"""
