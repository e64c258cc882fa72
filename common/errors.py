"""Error roots. A failure says whether a retry can fix it; callers never parse messages."""

from __future__ import annotations


class OrcError(Exception):
    """Root of every error the engine raises on purpose."""


class TransientError(OrcError):
    """A retry may succeed: a lock held by another process, a network blip."""


class PermanentError(OrcError):
    """A retry cannot succeed: bad config, a missing file, malformed data."""


class PluginNotFound(PermanentError, LookupError):
    """No extractor or loader is registered under that name."""


class PathOutsideDataRoot(PermanentError, ValueError):
    """A file path in a job config escapes `ORC_DATA_ROOT`."""


class PoisonMessage(OrcError):
    """A bus message that can never be processed: it goes to the dead-letter queue."""
