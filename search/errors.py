"""The error a user can fix: reported as one clear line (or one line per problem), no traceback."""


class UserError(Exception):
    """A mistake in what the user gave: a study file, a storage URL, a study name, a dataset."""
