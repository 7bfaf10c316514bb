"""Shared Hypothesis settings and JSON strategies of the fuzz suites (test_fuzz_*.py)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Examples per property; ``EDGE_FUZZ_EXAMPLES=2000`` is the long mode.
EXAMPLES = int(os.environ.get("EDGE_FUZZ_EXAMPLES", "60"))


def fuzz_settings(deadline_ms: int = 2000, examples: int = EXAMPLES):
    return settings(max_examples=examples, deadline=deadline_ms,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


#: Any JSON value, NaN and huge integers included.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)


def json_paths(obj, prefix=()):
    """Every (container, key) path in a JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield prefix + (i,)
            yield from json_paths(v, prefix + (i,))
