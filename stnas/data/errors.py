"""The one exception type of stnas.data."""


class DataError(ValueError):
    """Bad or missing data; the message names the path."""
