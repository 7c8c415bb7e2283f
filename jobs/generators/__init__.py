"""Sample generators: NanoAOD-style di-muon and Delphes-style DL-trigger ROOT files."""
