"""Error classes; each carries the exit code the design fixes for its kind."""


class BackupError(Exception):
    exit_code = 1


class ConfigError(BackupError):
    exit_code = 2


class DatabaseError(BackupError):
    exit_code = 3


class NoSuchDatabase(DatabaseError):
    """The database to connect to does not exist on the server."""


class StorageError(BackupError):
    exit_code = 4


class IntegrityError(BackupError):
    exit_code = 5


class Terminated(BackupError):
    """Raised in the main thread when Kubernetes sends SIGTERM."""

    exit_code = 1


# After SIGTERM, clean-up calls to S3 get this long at most: the pod's grace period is 30 s.
STOP_DEADLINE_SECONDS = 10.0
