"""The partition choice as a stage (jobs.partition.job)."""
