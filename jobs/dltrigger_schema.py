"""The DL-trigger data contract, in one place: the three classes (short name, reference sample, label),
the Delphes tree, the columns of the features set (jobs.ingest) and of the prepared sets (jobs.prepare,
jobs.tfrecords), their names and shapes (801 x 19 particle list, 14 high-level features).

Every stage, the DAG and the tests import these names instead of restating them. Standard library
only, so the Airflow side can import it without pulling in Arrow or NumPy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs.core.errors import UsageError

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


def features_arrow_schema() -> pa.Schema:
    """The Arrow schema of a features Parquet file (without the `label` partition column)."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(FEATURES_HLF_COLUMN, pa.list_(pa.float32(), N_HLF), nullable=False),
            pa.field(
                FEATURES_PARTICLES_COLUMN,
                pa.list_(pa.list_(pa.float32(), N_PARTICLE_FEATURES), N_PARTICLES),
                nullable=False,
            ),
            pa.field(SOURCE_FILE_COLUMN, pa.string(), nullable=False),
            pa.field(ENTRY_COLUMN, pa.int64(), nullable=False),
        ]
    )


def class_name(name: str) -> str:
    """Accept the short name or the reference sample name; anything else is a usage error."""
    for short, sample in SAMPLES.items():
        if name in (short, sample):
            return short
    known = ", ".join(f"{s} ({SAMPLES[s]})" for s in CLASSES)
    raise UsageError(f"--input: unknown class {name!r}; known classes: {known}")
