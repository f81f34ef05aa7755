"""Error types that the CLI turns into one-line messages.

Anything a user can cause (a bad file, a wrong model, a missing camera) raises a
``FervidError`` subclass; anything else is a bug and is allowed to show a traceback.
"""
from __future__ import annotations


class FervidError(Exception):
    """Base class for errors that are reported as one line, without a traceback."""

    exit_code = 1


class BadInputError(FervidError):
    """The user's input (file, folder, CSV row, option) cannot be used. Exit code 2."""

    exit_code = 2


class ModelFileError(BadInputError):
    """A file that was given as a model is not a usable fervid model."""


class OutputError(FervidError):
    """An output cannot be written where it was asked for (a file in the way, no space, no
    permission). Exit code 2, like bad input: the user must change the command, not fervid.
    Not a BadInputError, so loops that skip bad inputs never swallow it."""

    exit_code = 2
