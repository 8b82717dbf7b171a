"""The leaderboard layer: a pure function from result files to a site, imported as ``neokd_bench.leaderboard``.

It imports no torch and no runtime code (no model, defense, attack, submission or evaluation pipeline): it reads
result files and the paper's reported numbers, and writes HTML, SVG, ``SUMMARY.md`` and ``summary.json``.

* :mod:`.budget` - budget needed to reach an accuracy, the Pareto envelope, "x vs y MFLOPs, z% saved";
* :mod:`.stats` - mean ± std over training seeds, Welch intervals on differences, ties;
* :mod:`.validate` - schema and consistency checks of result files (``neokd-bench validate``);
* :mod:`.aggregate` - seeds grouped into entries, the summary (``SUMMARY.md``, ``summary.json``);
* :mod:`.reported` - the paper's reported numbers (``reported/*.json``, schema-validated);
* :mod:`.site` - the static site (``neokd-bench leaderboard build``).
"""
