"""The DL-trigger TFRecord stage: prepared Parquet sets -> TFRecord shards of tf.train.Example."""
