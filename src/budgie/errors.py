"""One exception type for everything a user can get wrong.

The CLI turns a ``BudgieError`` into a one-line message and exit code 2 (or an error record in
batch output); anything else escaping is a bug in Budgie, not in the input.
"""


class BudgieError(Exception):
    """Bad input or an unusable model: the message is one line, meant for the user."""


class AudioError(BudgieError):
    """The audio could not be read or is unusable (missing, empty, corrupt, too long)."""


class ModelError(BudgieError):
    """The checkpoint could not be found, downloaded or understood."""
