"""The store: documents, backends (folder, S3, single-file archive), publish, pull, verify,
housekeeping, mirror, release, signing and trust, the blob cache, the catalog.

Never imports the build: a store is read and written the same way whether its bundles were
built here, pulled or mirrored. May import: the shared modules, `factory.manifest` and
`factory.plan` (a release is a plan's cells, checked against the store).
"""
