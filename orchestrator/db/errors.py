"""The database errors the layers above catch, named here so that only db/ imports SQLAlchemy."""

from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, SQLAlchemyError

__all__ = ["IntegrityError", "InterfaceError", "OperationalError", "SQLAlchemyError"]
