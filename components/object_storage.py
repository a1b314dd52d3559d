"""Buckets on Hetzner Object Storage (S3-compatible), through the MinIO provider.

Hetzner has no API for Object Storage credentials: the access and secret keys are created in
the Cloud Console and given to the stack as config secrets. Hetzner supports bucket versioning
and lifecycle (expiration) rules; versioning is on where a deleted or overwritten object must be
recoverable (backups, user media), and old versions expire so the buckets do not grow forever."""

from __future__ import annotations

import pulumi
import pulumi_minio as minio

from unde_infra.model import Inventory

from .base import UndeComponent

VERSIONED = {"unde-backups": 30, "unde-user-media": 30}  # bucket -> days a noncurrent version is kept


class ObjectStorage(UndeComponent):
    TYPE = "unde:storage:ObjectStorage"

    def __init__(self, name: str, inventory: Inventory, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        config = pulumi.Config()
        spec = inventory.object_storage
        provider = minio.Provider(
            "hetzner-object-storage",
            minio_server=spec.endpoint,
            minio_region=spec.region,
            minio_user=config.require_secret("objectStorageAccessKey"),
            minio_password=config.require_secret("objectStorageSecretKey"),
            minio_ssl=True,
            opts=self.child(),
        )
        self.buckets: dict[str, minio.S3Bucket] = {}
        for bucket_name in spec.buckets:
            bucket = minio.S3Bucket(
                bucket_name,
                bucket=bucket_name,
                acl="private",
                force_destroy=False,
                opts=self.child(provider=provider, protect=True),
            )
            self.buckets[bucket_name] = bucket
            days = VERSIONED.get(bucket_name)
            if days is None:
                continue
            versioning = minio.S3BucketVersioning(
                bucket_name,
                bucket=bucket.bucket,
                versioning_configuration=minio.S3BucketVersioningVersioningConfigurationArgs(status="Enabled"),
                opts=self.child(provider=provider),
            )
            minio.IlmPolicy(
                bucket_name,
                bucket=bucket.bucket,
                rules=[
                    minio.IlmPolicyRuleArgs(
                        id="expire-old-versions", status="Enabled", noncurrent_version_expiration_days=days
                    )
                ],
                opts=self.child(provider=provider, depends_on=[versioning]),
            )
        self.register_outputs({"buckets": list(spec.buckets), "endpoint": spec.endpoint})
