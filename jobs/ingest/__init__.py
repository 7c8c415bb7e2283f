"""The DL-trigger ingestion stage: Delphes ROOT -> Parquet features (particle list + high-level features)."""
