"""Scheduled dumps of CockroachDB/PostgreSQL to S3-compatible storage, and safe restore."""

__version__ = "0.1.0"
