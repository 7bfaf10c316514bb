"""``edge-export build``: a device profile's models built, gated, chosen and bundled."""
