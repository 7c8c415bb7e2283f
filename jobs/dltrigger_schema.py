"""The DL-trigger data contract, in one place: the three classes (short name, reference sample, label),
the Delphes tree, the columns of the features set (jobs.ingest) and of the prepared sets (jobs.prepare,
jobs.tfrecords), their names and shapes (801 x 19 particle list, 14 high-level features).

Every stage, the DAG and the tests import these names instead of restating them. Standard library
only, so the Airflow side can import it without pulling in Arrow or NumPy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# The classes: short name -> reference sample name; label = index in CLASSES
CLASSES: tuple[str, ...] = ("qcd", "ttbar", "wjets")
CLASS_TITLES: tuple[str, ...] = ("QCD", "ttbar", "W+jets")  # how plots and reports name them
SAMPLES: dict[str, str] = {
    "qcd": "qcd_lepFilter_13TeV",
    "ttbar": "ttbar_lepFilter_13TeV",
    "wjets": "Wlnu_lepFilter_13TeV",
}
LABELS: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
N_CLASSES = len(CLASSES)
TREE = "Delphes"
# The fitted scalers beside a prepared set ("_": Parquet readers skip it, see jobs.core.storage)
SCALER_FILE = "_scaler.json"

# Shapes of one event
N_HLF = 14
N_PARTICLES = 801
N_PARTICLE_FEATURES = 19

HLF_NAMES = (
    "HT", "MET", "phiMET", "MT", "nJets", "nBjets", "LepPt", "LepEta", "LepPhi",
    "LepIsoCh", "LepIsoGamma", "LepIsoNeu", "LepCharge", "LepIsEle",
)  # fmt: skip
PARTICLE_FEATURES = (
    "Energy", "Px", "Py", "Pz", "Pt", "Eta", "Phi", "vtxX", "vtxY", "vtxZ", "ChPFIso", "GammaPFIso",
    "NeuPFIso", "isChHad", "isNeuHad", "isGamma", "isEle", "isMu", "Charge",
)  # fmt: skip
ETA = PARTICLE_FEATURES.index("Eta")
PHI = PARTICLE_FEATURES.index("Phi")

# The features set (jobs.ingest output): one Parquet row per event, hive-partitioned by `label`
FEATURES_HLF_COLUMN = "hfeatures"
FEATURES_PARTICLES_COLUMN = "particles"
SOURCE_FILE_COLUMN = "source_file"
ENTRY_COLUMN = "entry"
FEATURES_LABEL_COLUMN = "label"  # the hive partition (label=0/1/2), as Spark and pyarrow.dataset expect
FEATURES_COLUMNS = (FEATURES_HLF_COLUMN, FEATURES_PARTICLES_COLUMN, SOURCE_FILE_COLUMN, ENTRY_COLUMN)

# The prepared sets (jobs.prepare output, jobs.tfrecords input; the model's inputs)
HLF_COLUMN = "HLF_input"
GRU_COLUMN = "GRU_input"
LABEL_COLUMN = "encoded_label"
COUNT_COLUMN = "n_particles"

SHAPES: dict[str, tuple[int, ...]] = {
    HLF_COLUMN: (N_HLF,),
    GRU_COLUMN: (N_PARTICLES, N_PARTICLE_FEATURES),
    LABEL_COLUMN: (N_CLASSES,),
}
# the feature names along the last axis of each array column (errors name the feature, not an index)
FEATURE_NAMES: dict[str, tuple[str, ...]] = {
    FEATURES_HLF_COLUMN: HLF_NAMES, FEATURES_PARTICLES_COLUMN: PARTICLE_FEATURES,
    HLF_COLUMN: HLF_NAMES, GRU_COLUMN: PARTICLE_FEATURES,
    "hlf_min": HLF_NAMES, "hlf_max": HLF_NAMES,  # the scaler's (_scaler.json)
    "particle_mean": PARTICLE_FEATURES, "particle_std": PARTICLE_FEATURES,
}  # fmt: skip

# How the particle list of a prepared set is stored (Parquet and TFRecord alike):
# - padded: the reference-exact 801 x 19 per event (GRU_input = list<list<float>>, 801 of 19 each;
#   TFRecord float_list of 801*19 values);
# - ragged: only the event's n_particles real rows (GRU_input = list<fixed_size_list<float, 19>> with
#   n_particles entries; TFRecord float_list of n_particles*19 values), zero-padded back to 801 (or
#   bucketed) at batch time by jobs.core.tf_readers. Exact only where padded rows are exactly 0
#   (global particle scaling), so jobs.prepare refuses ragged with per-event scaling.
# The layout is recorded in each prepared Parquet file's schema metadata (LAYOUT_METADATA_KEY) and in
# the _summary.json of jobs.prepare and jobs.tfrecords ("particle_layout").
PARTICLE_LAYOUTS: tuple[str, ...] = ("ragged", "padded")
DEFAULT_PARTICLE_LAYOUT = "ragged"
LAYOUT_METADATA_KEY = b"colliderflow.particle_layout"
LAYOUT_SUMMARY_KEY = "particle_layout"


def prepared_arrow_schema(layout: str) -> pa.Schema:
    """The Arrow schema of a prepared Parquet file (jobs.prepare output) in `layout`, with the layout
    in its metadata."""
    import pyarrow as pa

    floats = pa.list_(pa.float32())
    gru = (
        pa.list_(pa.list_(pa.float32(), N_PARTICLE_FEATURES))
        if layout == "ragged"
        else pa.list_(pa.list_(pa.float32()))
    )
    return pa.schema(
        [
            pa.field(HLF_COLUMN, floats),
            pa.field(GRU_COLUMN, gru),
            pa.field(LABEL_COLUMN, floats),
            pa.field(COUNT_COLUMN, pa.int64()),
            pa.field(SOURCE_FILE_COLUMN, pa.string()),
            pa.field(ENTRY_COLUMN, pa.int64()),
        ],
        metadata={LAYOUT_METADATA_KEY: layout.encode()},
    )


def layout_of(schema: pa.Schema) -> str:
    """The particle layout of a prepared Parquet file from its Arrow schema: the metadata, else the
    type (older padded sets carry no metadata)."""
    import pyarrow as pa

    found = (schema.metadata or {}).get(LAYOUT_METADATA_KEY)
    if found:
        return found.decode()
    if GRU_COLUMN in schema.names:
        inner = schema.field(GRU_COLUMN).type
        if pa.types.is_list(inner) and pa.types.is_fixed_size_list(inner.value_type):
            return "ragged"
    return "padded"


def features_arrow_schema(layout: str = "padded") -> pa.Schema:
    """The Arrow schema of a features Parquet file (without the `label` partition column) in `layout`:
    padded, the reference's 801 x 19 per event, or ragged, the event's real rows only; the layout is
    in its metadata."""
    import pyarrow as pa

    rows = pa.list_(pa.float32(), N_PARTICLE_FEATURES)
    return pa.schema(
        [
            pa.field(FEATURES_HLF_COLUMN, pa.list_(pa.float32(), N_HLF), nullable=False),
            pa.field(
                FEATURES_PARTICLES_COLUMN,
                pa.list_(rows) if layout == "ragged" else pa.list_(rows, N_PARTICLES),
                nullable=False,
            ),
            pa.field(SOURCE_FILE_COLUMN, pa.string(), nullable=False),
            pa.field(ENTRY_COLUMN, pa.int64(), nullable=False),
        ],
        metadata={LAYOUT_METADATA_KEY: layout.encode()},
    )


def class_name(name: str) -> str | None:
    """The short name of a class given by its short name or its reference sample name; None if neither."""
    for short, sample in SAMPLES.items():
        if name in (short, sample):
            return short
    return None
