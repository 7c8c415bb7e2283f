"""Object-store input for training: stage the shards in to local scratch vs stream them through fsspec.

    python -m bench.train_input [--events 4096] [--shards 4] [--epochs 3] [--max-particles 64]

One synthetic prepared set (TFRecord shards, bench/fixtures/prepared.py) on moto's S3 server on
loopback; the input pipeline alone (read, batch, parse: what differs between the two), no model:
- stage: `jobs.core.tf_staging.stage_in` copies the shards to local scratch once, then TFRecordDataset
  reads local files every epoch (what jobs.train does);
- stream: a Python generator per shard parses the TFRecord framing from an fsspec file object
  (`from_generator`, shards interleaved), re-reading the store every epoch.
Prints events/s per epoch (the staging time is charged to the first epoch) and the MB/s of the
copy. Loopback moto is a best case for streaming latency and a worst case for server throughput
(moto is a Python server): read the ratio, not the absolute numbers, and repeat on the real store.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import tempfile
import time


def _stream_records(url: str):
    """Serialized records of one TFRecord shard read through fsspec (length, crc, data, crc)."""
    from jobs.core.storage import filesystem

    fs, path = filesystem(url)
    with fs.open(path, "rb", block_size=8 * 2**20, cache_type="readahead") as f:
        while head := f.read(12):
            (length,) = struct.unpack("<Q", head[:8])
            yield f.read(length)
            f.read(4)


def _streamed(files: list[str], batch: int):
    import tensorflow as tf

    from jobs.core.tf_readers import _feature_spec, _to_element

    spec = _feature_spec(True)
    names = tf.data.Dataset.from_tensor_slices(files)
    ds = names.interleave(
        lambda u: tf.data.Dataset.from_generator(
            lambda u: _stream_records(u.decode()), args=(u,), output_signature=tf.TensorSpec([], tf.string)
        ),
        cycle_length=len(files),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.batch(batch).map(lambda s: _to_element(tf.io.parse_example(s, spec), True)).prefetch(2)


def _epoch(ds) -> int:
    return sum(int(y.shape[0]) for _, y in ds)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.train_input", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4096)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-particles", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        COLLIDERFLOW_S3_ENDPOINT=f"http://{host}:{port}",
    )
    from bench.fixtures.prepared import generate, write_tfrecords
    from jobs.core.storage import filesystem
    from jobs.core.tf_readers import read_tfrecords
    from jobs.core.tf_staging import TFRECORD_SUFFIXES, list_data_files, stage_in

    scratch = tempfile.mkdtemp(prefix="bench-train-input-")
    try:
        local = write_tfrecords(generate(args.events, seed=1, max_particles=args.max_particles),
                                os.path.join(scratch, "set"), shards=args.shards)  # fmt: skip
        fs, _ = filesystem("s3://bench")
        fs.mkdir("bench")
        fs.put(local + "/", "bench/set/", recursive=True)
        files = list_data_files("s3://bench/set", TFRECORD_SUFFIXES)
        mb = sum(fs.size(f) for f in files) / 1e6

        result: dict[str, list[float]] = {"stage": [], "stream": []}
        t0 = time.perf_counter()
        staged = stage_in(files, os.path.join(scratch, "staged"), "s3://bench/set")
        stage_s = time.perf_counter() - t0
        ds = read_tfrecords(staged.directory, batch_size=args.batch, include_n_particles=True)
        for epoch in range(args.epochs):
            t = time.perf_counter()
            n = _epoch(ds)
            result["stage"].append(n / (time.perf_counter() - t + (stage_s if epoch == 0 else 0.0)))
        ds = _streamed(files, args.batch)
        for _ in range(args.epochs):
            t = time.perf_counter()
            n = _epoch(ds)
            result["stream"].append(n / (time.perf_counter() - t))
        report = {
            "events": args.events,
            "shards": args.shards,
            "megabytes": round(mb, 1),
            "stage_in_seconds": round(stage_s, 2),
            "stage_in_mb_per_s": round(mb / stage_s, 1),
            "events_per_second": {k: [round(v) for v in vs] for k, vs in result.items()},
        }
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        server.stop()


if __name__ == "__main__":
    main()
