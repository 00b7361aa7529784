"""The last step of a mirror: DST's index, written with a conditional write.

An unsigned source's records are merged into DST's index verbatim. A signed source's
envelope is copied byte for byte (a mirror cannot sign), which is only allowed when it
loses nothing DST lists: DST has no index, or every bundle version DST lists the
source lists too, with the same manifest. A DST index that is already the same or a
newer signed version is kept.
"""

from __future__ import annotations

from factory.errors import FactoryError
from factory.store.backends.base import PreconditionFailed, Store
from factory.store.documents import INDEX, Index, is_envelope
from factory.store.index import read_index, update_index


def merge_index(
    source: bytes,
    src_index: Index,
    dst: Store,
    bundles: set[tuple[str, str]],
    releases: set[tuple[str, str]],
) -> str:
    """Write DST's index from the source index's bytes `source` (parsed: `src_index`)."""
    if not is_envelope(source):
        update_index(dst, lambda index: index.with_records_of(src_index, bundles, releases))
        return "merged"
    for _ in range(20):
        current = dst.get_doc(INDEX)
        try:
            if current is None:
                dst.put_doc(INDEX, source, if_none_match=True)
                return "written"
            if current.data == source:
                return "unchanged"
            dst_index, _ = read_index(dst)
            if is_envelope(current.data) and (dst_index.version or 0) > (src_index.version or 0):
                return "kept (the destination's signed index is newer)"
            lost = dst_index.lists() - src_index.lists()
            if lost:
                shown = ", ".join(f"{n}@{v}" for n, v, _ in sorted(lost)[:5])
                raise FactoryError(
                    f"{dst.url}/{INDEX} lists bundle versions the signed source index does not ({shown}); "
                    "a mirror cannot sign a merged index",
                    hint="mirror a signed store into an empty store or prefix, or one that only mirrors that source",
                )
            dst.put_doc(INDEX, source, if_match=current.etag)
            return "written"
        except PreconditionFailed:
            continue
    raise FactoryError(f"{dst.url}/{INDEX}: gave up after 20 conflicting writes", hint="run the mirror again")
