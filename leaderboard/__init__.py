"""The leaderboard layer: a pure function from result files to a site, imported as ``neokd_bench.leaderboard``.

It imports no torch and no runtime code (no model, defense, attack, submission or evaluation pipeline): it reads
result files and the paper's reported numbers, and writes HTML, SVG, ``SUMMARY.md`` and ``summary.json``. What it
shares with the runtime (name grammar, threat model, result-file helpers) comes from the torch-free
:mod:`neokd_bench.contract`. The headline is the per-exit worst case; ranks follow Chatbot Arena's rule with
Holm's correction over every pair of a table (:mod:`.stats`, :mod:`.aggregate`).

* :mod:`.budget` - budget needed to reach an accuracy, the Pareto envelope, "x vs y MFLOPs, z% saved";
* :mod:`.stats` - mean ± std over training seeds, Welch intervals on differences, ties, Holm, significance ranks;
* :mod:`.validate` - schema and consistency checks of result files (``neokd-bench validate``);
* :mod:`.aggregate` - seeds grouped into entries, the summary (``SUMMARY.md``, ``summary.json``);
* :mod:`.reported` - the paper's reported numbers (``reported/*.json``, schema-validated);
* :mod:`.site` - the static site (``neokd-bench leaderboard build``).
"""
