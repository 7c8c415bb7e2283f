"""The Inclusive Classifier of the DL trigger (SparkDLTrigger): GRU over the particle list + the
high-level features, built with tf-keras (legacy Keras 2; see docs/dl-trigger-training.md for why).

The GRU uses the cuDNN-eligible configuration (tanh/sigmoid, no recurrent dropout, no unroll,
use_bias, reset_after=True), so on a GPU Keras picks the cuDNN kernel; with right-padded masks
(real particles first) that kernel also applies to masked batches.
"""

from __future__ import annotations

# isort: off
from jobs.core import tf_env  # noqa: F401  (before TensorFlow)
# isort: on

import tensorflow as tf
import tf_keras as keras

from jobs.dltrigger_schema import CLASSES, N_HLF, N_PARTICLE_FEATURES, N_PARTICLES


@keras.saving.register_keras_serializable(package="colliderflow")
class EventCount(keras.metrics.Metric):
    """Number of events seen in the epoch (per worker): gives events/s without knowing the dataset
    size up front (TFRecord shards carry no row count, bucketed batches have varying sizes)."""

    def __init__(self, name: str = "events", **kwargs):
        super().__init__(name=name, **kwargs)
        self.count = self.add_weight(name="count", initializer="zeros", dtype=tf.float32)

    def update_state(self, y_true, y_pred, sample_weight=None):  # noqa: ARG002 - Keras signature
        self.count.assign_add(tf.cast(tf.shape(y_true)[0], tf.float32))

    def result(self):
        return self.count

    def reset_state(self) -> None:
        self.count.assign(0.0)


def build_model(
    sequence_length: int | None = N_PARTICLES,
    n_features: int = N_PARTICLE_FEATURES,
    n_hlf: int = N_HLF,
    gru_units: int = 50,
    dense_units: int = 25,
    dropout: float = 0.2,
) -> keras.Model:
    """The reference architecture. sequence_length=None accepts any particle-list length, which is
    what bucketed training feeds (each batch sliced to its longest real particle list)."""
    gru_in = keras.Input(shape=(sequence_length, n_features), name="GRU_input")
    hlf_in = keras.Input(shape=(n_hlf,), name="HLF_input")
    x = keras.layers.Masking(mask_value=0.0, name="masking")(gru_in)
    x = keras.layers.GRU(
        gru_units,
        activation="tanh",
        recurrent_activation="sigmoid",
        recurrent_dropout=0.0,
        unroll=False,
        use_bias=True,
        reset_after=True,
        name="gru",
    )(x)
    x = keras.layers.Dropout(dropout, name="gru_dropout")(x)
    h = keras.layers.Dropout(dropout, name="hlf_dropout")(hlf_in)
    x = keras.layers.concatenate([x, h], name="concatenate")
    x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
    # float32 output even under a mixed_float16 policy: softmax + cross-entropy stay numerically safe
    out = keras.layers.Dense(len(CLASSES), activation="softmax", dtype="float32", name="output")(x)
    return keras.Model(inputs=[gru_in, hlf_in], outputs=out, name="inclusive_classifier")


def compile_model(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """Categorical cross-entropy, accuracy and Adam, as the reference; plus the event counter."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy", EventCount()],
    )
    return model


def load_model(path: str) -> keras.Model:
    """Load a model.keras written by jobs.train (tf-keras format), without the training config."""
    return keras.models.load_model(path, compile=False)
