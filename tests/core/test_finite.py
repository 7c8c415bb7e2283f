"""Finite or refused (jobs.core.finite): the one check every stage applies where numbers enter."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.core.errors import BadInputError
from jobs.core.finite import check_finite, non_finite
from jobs.dltrigger_schema import FEATURE_NAMES, PARTICLE_FEATURES


def test_the_first_bad_column_is_named_with_its_feature_and_count():
    particles = np.zeros((4, 801, 19), np.float32)
    particles[1, 7, PARTICLE_FEATURES.index("vtxY")] = np.nan
    particles[2, 0, PARTICLE_FEATURES.index("vtxY")] = -np.inf
    hlf = np.ones((4, 14), np.float32)
    columns = {"hfeatures": hlf, "particles": particles, "entry": np.arange(4)}
    with pytest.raises(BadInputError) as caught:
        check_finite("f.root", columns, FEATURE_NAMES)
    assert str(caught.value) == "f.root: 2 non-finite value(s) (NaN or infinity) in particles[vtxY]"
    check_finite("f.root", {"hfeatures": hlf, "entry": np.arange(4)}, FEATURE_NAMES)  # ints are not checked
    assert non_finite(np.array([1.0, np.nan, np.inf])) == (2, "")
