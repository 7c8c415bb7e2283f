"""The DL-trigger training stage: the Inclusive Classifier on one process, N local workers or a cluster."""
