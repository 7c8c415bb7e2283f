"""What two or more stages share: storage (fsspec) with I/O accounting, Spark sessions and chunk plans,
ROOT I/O, four-vector formulas, tensors in Arrow, the classifier model and its tf.data input, job
metrics, the command-line contract and errors. Anything used by one stage lives in that stage's package."""
