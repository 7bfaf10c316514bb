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


class StaleTemplateError(EdgeError):
    """Embeddings from different models (model id or sha256) were about to be compared.

    Templates enrolled with one embedder are meaningless to another; the user must re-enrol.
    """


class ThresholdMissingError(ModelCardError):
    """A model card carries no threshold for the requested operating point (e.g. a FAR)."""


class FaceError(EdgeError, ValueError):
    """Bad input to the face pipeline (wrong image shape, landmarks, crop size)."""


class LivenessError(EdgeError):
    """A liveness check could not be performed (missing models, wrong source kind)."""


class NotIrSourceError(LivenessError):
    """``require_ir`` is set but the frames are not infrared (e.g. colour frames)."""


class DetectorOutputError(EdgeError, ValueError):
    """A detector's outputs do not have the shape its decoder expects (wrong card or model)."""


class DatasetError(EdgeError, ValueError):
    """A labelled dataset is malformed: a missing folder, or a label line that cannot be parsed."""


# -- face unlock (edge.unlock) -------------------------------------------------------------------


class UnlockError(EdgeError):
    """Base class of the face-unlock application's errors (edge.unlock)."""


class KeyFileError(UnlockError):
    """The template key is missing, has the wrong size, or its file is readable by others."""


class StoreKeyMismatchError(KeyFileError):
    """The key (file) given does not open the template store: its records use another key."""


class TemplateStoreError(UnlockError):
    """The template store is unusable: unreadable, malformed or of an unsupported format."""


class TemplateIntegrityError(TemplateStoreError):
    """A stored record (or an export file) failed authentication: tampered, or the wrong key."""


class StaleEnrollmentError(UnlockError, StaleTemplateError):
    """A user's templates were made by another embedder (model id / sha256): re-enrol."""


class UnknownUserError(UnlockError, KeyError):
    """No templates are stored for the user named."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UserExistsError(UnlockError, ValueError):
    """The user name is already enrolled (enrol with --replace, rename to a free name)."""


class EnrollmentError(UnlockError):
    """Enrolment could not collect enough good samples, or the face belongs to another user."""


class LockedOutError(UnlockError):
    """Too many consecutive failures: the user is locked out until ``until`` (epoch seconds)."""

    def __init__(self, message: str, *, user: str = "", until: float = 0.0) -> None:
        super().__init__(message)
        self.user, self.until = user, until


class LockoutStateError(LockedOutError, TemplateStoreError):
    """The lockout state file is unreadable or absurd: every user is locked until it is reset."""


class UnlockRefused(UnlockError):
    """Face unlock refused by policy before any capture: an SSH session, or the lid closed."""


# -- benchmarking (edge.bench) -------------------------------------------------------------------


class ModelFormatError(EdgeError, ValueError):
    """A model file cannot be parsed as the format its suffix claims (broken or foreign bytes)."""


class BenchError(EdgeError):
    """A benchmark could not be set up or run (no inputs, no runnable variant, a worker that died)."""


class BenchReportError(BenchError, ValueError):
    """A benchmark report file is unreadable, malformed or of an unsupported schema version."""


class ZoneConfigError(EdgeError, ValueError):
    """A zones/lines configuration file is malformed: names the file, the entry and the field."""


class SinkError(EdgeError):
    """An event sink could not be set up or written (bad spec, unwritable path, buffer failure)."""


class BundleError(EdgeError):
    """A bundle (a signed directory or .tar.gz of models and cards) cannot be used.

    Attributes:
        file: the bundle-relative path of the offending file, when one file is to blame.
    """

    def __init__(self, message: str, file: str | None = None) -> None:
        super().__init__(message)
        self.file = file


class BundleSignatureError(BundleError):
    """The bundle's manifest signature is missing, malformed, or does not verify with the given key."""


class BundleIntegrityError(BundleError):
    """A bundle file is missing, extra, or differs (size or sha256) from the signed manifest."""


class BundleKeyError(BundleError, ValueError):
    """A bundle signing/verification key file is missing, unreadable or not an Ed25519 key."""


class ServiceError(EdgeError):
    """The detection service could not start (e.g. its health port is already in use)."""


class ReleaseNotFoundError(BundleError):
    """No bundle at the given or default place (the message says how to provide one)."""


class BundleArchiveError(BundleIntegrityError):
    """A bundle archive is refused before or while extracting: too large, too many members, unsafe member."""
