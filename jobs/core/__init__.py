"""What two or more stages share: where tasks run (engine), how bytes move (storage, listing, metering,
commit), ROOT I/O, four-vector formulas, tensors in Arrow, the classifier model and its tf.data input,
job metrics, the command-line contract and errors. Anything used by one stage lives in its package."""
