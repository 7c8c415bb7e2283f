"""The same events as an RNTuple: a TTree rewritten with uproot 5.7's RNTuple writer, for tests that
compare a job's results on both formats. Flat branches keep their names; Delphes leaves
'<Collection>.<Field>' become an RNTuple collection field of records ('Jet' with subfield 'PT'),
whose qualified name is again 'Jet.PT'."""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
import uproot


def tree_to_rntuple(src: str, dst: str, name: str, branches: Sequence[str] | None = None) -> str:
    """Write tree `name` of `src` (all branches, or `branches`) as RNTuple `name` into `dst`."""
    with uproot.open(src) as f:
        arrays = f[name].arrays(None if branches is None else list(branches), library="ak")
    fields: dict = {}
    for field in arrays.fields:
        collection, dot, leaf = field.partition(".")
        if dot:
            fields.setdefault(collection, {})[leaf] = arrays[field]
        else:
            fields[field] = arrays[field]
    data = {k: ak.zip(v) if isinstance(v, dict) else v for k, v in fields.items()}
    with uproot.recreate(dst) as out:
        out.mkrntuple(name, data)
    with uproot.open(dst) as f:
        assert f.classnames()[f"{name};1"] == "ROOT::RNTuple"
    return dst
