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


def message_line(exc: BaseException) -> str:
    """The one line that shows ``exc`` to the user.

    An error raised in a data-loading worker reaches the main process re-raised by torch, with
    the worker's traceback in its message (``Caught ImageError in DataLoader worker process 0.
    Original Traceback ...``); the line shown is the original message, from the traceback's last
    line. Any other message of several lines is joined into one.
    """
    text = str(exc).strip()
    if text.startswith(f"Caught {type(exc).__name__} ") and "Traceback" in text:
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())
