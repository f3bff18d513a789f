"""What a study found, for people: ``status``, ``trials``, ``best``, ``compare``, ``report``,
``evaluate`` and ``dashboard``.

- ``fronts``: a study's best (one trial, or the Pareto front of several objectives).
- ``tables``: the study's state, trials and best trial as terminal tables.
- ``compare`` and ``compare_view``: the questions hand-built experiments ask, and their tables.
- ``report``: the HTML page and Markdown table.
- ``evaluate``: retraining one trial and measuring it on the test split.
- ``dashboard``: optuna-dashboard on the study's storage.
- ``output_folders``: folders the commands write into, checked before any work starts.
"""
