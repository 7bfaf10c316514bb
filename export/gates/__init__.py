"""Accuracy gates: roles and their data, the base gate, one gate per role, the role -> gate table."""
