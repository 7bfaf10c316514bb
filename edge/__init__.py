"""edgesight device runtime: load a model or bundle and run it on frames."""

__version__ = "0.1.0"
