"""The generate stage: synthetic NanoAOD-like and Delphes-like ROOT samples (demos, tests, benchmarks)."""
