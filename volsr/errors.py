"""Exception types for user-facing errors.

Every error a user can cause (a bad path, a broken file, an impossible geometry, an
existing output) derives from :class:`VolsrError`, so that the command line turns it into
a one-line message and exit status 2 instead of a traceback. Each subclass also derives
from the matching built-in type so that library users can catch ``ValueError`` or
``FileExistsError`` as usual.
"""

from __future__ import annotations

__all__ = [
    "VolsrError",
    "FormatError",
    "GeometryError",
    "InvalidDataError",
    "OutputExistsError",
    "ResumeError",
    "TooSmallForPairsError",
    "first_line",
]


class VolsrError(Exception):
    """Base class of every error caused by user input (files, arguments, data)."""


class FormatError(VolsrError, ValueError):
    """A file is missing, unreadable, truncated, or not in the format its name says."""


class GeometryError(VolsrError, ValueError):
    """An affine, shape, scale or spacing is impossible (singular, non-finite, zero-size)."""


class InvalidDataError(VolsrError, ValueError):
    """Voxel values that cannot be processed as they are (NaN/Inf, wrong dimensionality)."""


class OutputExistsError(VolsrError, FileExistsError):
    """The output path exists and overwriting was not requested, or the output is an input."""


class ResumeError(VolsrError, ValueError):
    """A ``--resume`` that cannot continue: the run differs, its record is unreadable, or the
    output is finished."""


class TooSmallForPairsError(InvalidDataError):
    """An input too small to cut self-supervised pairs from (``--adapt``, the per-scan check)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty): what a one-line
    error quotes of a library's error.

    Parameters
    ----------
    exc : BaseException
        Any exception.

    Returns
    -------
    str

    Examples
    --------
    >>> first_line(ValueError("bad\\nmore")), first_line(KeyError())
    ('bad', 'KeyError')
    """
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
