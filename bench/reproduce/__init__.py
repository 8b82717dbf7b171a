"""`neokd-bench reproduce`: the paper's tables as grids of runs (grids), their cost (cost), how they run
(executors: local or Slurm through submitit), and their output in the paper's layout (report)."""
