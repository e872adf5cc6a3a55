"""The run room: the run directory (config, metrics, plots, summary), held-out evaluation, what the run
was computed on, and how several processes share one run."""
