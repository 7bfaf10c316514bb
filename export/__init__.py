"""edgesight workstation tool-chain: convert, quantise, gate and bundle models."""

__version__ = "0.1.0"
