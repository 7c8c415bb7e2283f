"""The DL-trigger preparation stage: features -> undersampled, scaled, shuffled train/test Parquet sets."""
