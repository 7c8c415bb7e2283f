"""ROOT's RDataFrame on the df102 di-muon selection (the NanoAOD example of ROOT's tutorials), run as
its own process so that its start-up (interpreter, cling JIT) is measured like everyone else's.

    python -m bench.rdf_dimuon --threads N --bins B --output counts.npy FILE [FILE ...]

df102: exactly two muons, opposite charge, mass of the sum of the (pt, eta, phi, m) four-vectors
(ROOT::VecOps::InvariantMass); filled here into the same log-spaced bins as jobs.dimuon so the two
histograms compare bin for bin. --threads 0: ROOT.EnableImplicitMT() on all cores.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

MASS_RANGE = (0.25, 300.0)  # jobs.dimuon.job.MASS_RANGE; not imported so that jobs/ is not loaded here


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rdf_dimuon", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--threads", type=int, default=1, help="1: single-threaded; N > 1 or 0 (all): IMT")
    parser.add_argument("--bins", type=int, default=2000)
    parser.add_argument("--output", required=True, help=".npy of the mass histogram's bin counts")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=r"(?s).*alpha stage")
    import ROOT

    ROOT.gROOT.SetBatch(True)
    if args.threads != 1:
        ROOT.EnableImplicitMT(args.threads)
    edges = np.exp(np.linspace(np.log(MASS_RANGE[0]), np.log(MASS_RANGE[1]), args.bins + 1))
    model = ROOT.RDF.TH1DModel("Dimuon_mass", "", args.bins, edges)
    files = ROOT.std.vector("string")()
    for f in args.files:
        files.push_back(f)
    df = ROOT.RDataFrame("Events", files)
    h = (
        df.Filter("nMuon == 2", "Events with exactly two muons")
        .Filter("Muon_charge[0] != Muon_charge[1]", "Muons with opposite charge")
        .Define("Dimuon_mass", "InvariantMass(Muon_pt, Muon_eta, Muon_phi, Muon_mass)")
        .Histo1D(model, "Dimuon_mass")
    )
    counts = np.array([h.GetBinContent(i) for i in range(1, args.bins + 1)])
    np.save(args.output, counts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
