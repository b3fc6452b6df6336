"""The control-plane database: metadata of jobs, events, leases, datasets and subject models (docs/control-plane.md).

Blobs (photos, checkpoints, weights, images) stay in shared storage; everything that needs a transaction lives
here. SQLite is the embedded default, PostgreSQL the cluster backend; both run the same schema and migrations.
"""
