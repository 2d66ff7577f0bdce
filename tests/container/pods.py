"""The documented release (tests/e2e/release.py) rendered to run from the built image."""

from __future__ import annotations

from tests.container.imagerunner import ImagePodRunner
from tests.e2e.release import DB_PORT, DB_SERVICE, NAMESPACE, RELEASE, render, user_secrets

BACKUP_CRONJOB = f"{RELEASE}-enclaveos-backup"   # other CronJobs may render beside it


def image_runner(image: str, store, pg, prefix: str, *flags: str,
                 secret_key: str | None = None) -> tuple[ImagePodRunner, list[dict]]:
    """The chart rendered (Helm 4) with the documented flags, its backup image set to `image`."""
    objects = render("helm4", store.endpoint, prefix,
                     f"enclaveos-chart.Backup.Image.Repository={image.rpartition(':')[0]}", *flags)
    secrets = user_secrets(store.access_key, secret_key or store.secret_key, pg.password)
    return ImagePodRunner([*objects, *secrets], NAMESPACE, services={f"{DB_SERVICE}:{DB_PORT}": pg.port}), objects
