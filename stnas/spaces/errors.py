"""The one exception type of stnas.spaces: a wrong space file, architecture or budget."""


class SpaceError(ValueError):
    """Raised with a message that names the offending field."""
