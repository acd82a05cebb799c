"""The one error type of shotgun's user-facing failures.

Bad input, a bad declaration or config, a library that does not verify: each raises a subclass of
:class:`ShotgunError` whose message names the file (row, key, model) and the reason. The command
line prints such an error as ``shotgun: error: <message>`` and exits with status 2;
:class:`ShotgunWarning` is the warning counterpart.
"""


class ShotgunError(ValueError):
    """A user-facing failure; the message names what is wrong and where."""


class ShotgunWarning(UserWarning):
    """A user-facing warning (e.g. some inputs are not of the kind expected); the command line
    prints it as ``shotgun: warning: <message>``."""
