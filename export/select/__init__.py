"""Which variant ships: int8 targets, checks on the report split, the board's cost model, timing."""
