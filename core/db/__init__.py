"""The database backend: Django's PostgreSQL backend that also sends the tenancy scope (core/tenancy.py)."""
