"""The DL-trigger training stage: the Inclusive Classifier on one process, N local workers or a cluster."""

from jobs.core import tf_env  # noqa: F401  (before TensorFlow, whichever module imports it first)
