"""Trust: keys, signatures and the policy a pull applies before it uses any digest.

signing.py          Ed25519 keys (PEM private, `ed25519:` public lines) and DSSE signatures
policy.py           which keys this machine trusts, and the checks a signed index must pass
                    (signature, expiry, rollback)
release_signing.py  detached signatures of release manifests

Used by the store (publish signs, pull and mirror check) and the CLI. May import: the shared
modules and the store's vocabulary (documents, backends, bundle_folder, integrity).
"""
