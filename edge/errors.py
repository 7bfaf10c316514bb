"""Typed exceptions raised by the edge runtime.

Library code raises these; only :mod:`edge.cli` turns them into messages and exit codes.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class of every error edgesight raises on purpose."""


class ModelNotFoundError(EdgeError, FileNotFoundError):
    """A model (or labels) file could not be found anywhere it was looked for."""


class ModelIntegrityError(EdgeError):
    """A model file exists but its sha256 does not match the model card."""


class ModelCardError(EdgeError, ValueError):
    """A model card is malformed: a missing or mistyped field."""


class ImageLoadError(EdgeError, ValueError):
    """An image file could not be decoded (corrupt, truncated or not an image)."""


class SourceError(EdgeError):
    """A frame source could not be opened or read."""


class CameraUnavailable(SourceError):
    """A camera could not be opened (no device, busy, or wrong settings)."""


class CameraDisconnected(SourceError):
    """A camera that was streaming stopped delivering frames (unplugged, crashed)."""


class EngineError(EdgeError):
    """An inference engine failed to load a model or run it."""


class ProfileError(EdgeError, ValueError):
    """A device profile (firmware_configs/*.toml) is malformed."""
