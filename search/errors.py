"""The error a user can fix: reported as one clear line (or one line per problem), no traceback;
and the one line a database error is shown as."""


class UserError(Exception):
    """A mistake in what the user gave: a study file, a storage URL, a study name, a dataset."""


# Optuna's StorageInternalError for any database error, without the database's words.
OPTUNA_COMMIT_ERROR = "An exception is raised during the commit"


def database_error(exc: BaseException) -> str:
    """The driver's own first line for a database error, without SQLAlchemy's wrapping (or a
    proxy's own words, without gRPC's)."""
    details = getattr(exc, "details", None)
    if callable(details):  # a gRPC error: the proxy's words
        text = str(details() or exc).strip()
        failed = "Exception calling application: "  # an error of the proxy's storage
        if text.startswith(failed):
            told = text[len(failed):].strip()
            if told.startswith(OPTUNA_COMMIT_ERROR):  # says nothing of the database's words
                return "the proxy's database failed (the proxy's log says why)"
            text = f"the proxy's database failed: {told}"
    else:
        text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` as a message quotes it: cut to ``limit`` characters, with the length
    said, so that a 5,000-character name does not fill the screen."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:limit]}...{size}"
