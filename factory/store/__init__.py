"""Storage: where bundles live and how their bytes move, verified.

documents/      the store's contract: bundle manifests, the index, release manifests and
                signed envelopes, as frozen typed documents
backends/       a local folder (the embedded default), S3-compatible storage, a single-file archive
index.py        reading and conditionally updating the index
publish.py      blobs first, the bundle manifest next, the index last
pull.py         index -> manifest -> verified blobs -> a bundle folder, atomically
blob_cache.py   the shared, locked, resumable blob cache a pull fills
verify.py       a bundle folder or a whole store checked against its digests
housekeeping.py gc and yank; mirror*.py store-to-store copies; archive.py one-file stores
choice.py       which store a command means; bundle_folder.py, integrity.py a bundle's files

Knows nothing of how bundles were built or who reads them (no cells, no clients): a store
is read and written the same way whether its bundles were built here, pulled or mirrored.
May import: the shared modules, the manifest, the plan, devices (the CPU level a pull
chooses by) and trust (documents and backends sit below trust; the operations apply it).
"""
