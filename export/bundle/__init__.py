"""The signed bundle: keys, the shipped (rewritten) models, the report, the manifest on disk."""
