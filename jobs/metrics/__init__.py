"""The metrics stage: a run report (HTML, summary.json) and Prometheus metrics from stage outputs and
Spark event logs."""
