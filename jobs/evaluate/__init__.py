"""The DL-trigger evaluation stage: per-class ROC AUC, accuracy and plots of a trained classifier."""

from jobs.core import tf_env  # noqa: F401  (before TensorFlow, whichever module imports it first)
