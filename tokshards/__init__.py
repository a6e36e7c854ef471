from .errors import UserError  # noqa: F401
