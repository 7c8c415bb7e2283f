"""The CMS di-muon stage: ROOT files -> opposite-charge muon pairs -> mass spectrum, kinematics, cut-flow."""
