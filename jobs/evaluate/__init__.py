"""The DL-trigger evaluation stage: per-class ROC AUC, accuracy and plots of a trained classifier."""
