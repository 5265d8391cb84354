"""Errors that reach the user as one line on stderr, with the exit status they carry."""

from __future__ import annotations


class LicError(Exception):
    """Bad data: an unreadable image, a corrupt bitstream, a mismatched checkpoint (exit 1)."""

    exit_code = 1


class UsageError(LicError):
    """Bad usage: a missing option, an unknown codec, an unavailable device (exit 2)."""

    exit_code = 2


class BitstreamError(LicError):
    """A ``.lic`` container that cannot be parsed or whose integrity check fails."""


class CheckpointError(LicError):
    """A codec checkpoint that cannot be loaded, or does not match what it is used for."""


class ImageError(LicError):
    """An image file that cannot be read or written."""
