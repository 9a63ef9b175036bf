"""The packed page flags (P_FLAGS) and the mirror of a resident page's frame in them.

A plain hit must know whether its frame is host-swapped or shared and whether the frame's
access bit is already set; reading the frame row for that would be a second cache line
per access. The page row carries a copy instead, kept by the few places that change those
frame fields: ``set_host`` (host state), the access paths (access bit), and
``mirror_frame`` in ``access.fault`` and ``hits.plain_fault`` (which knows its frame is
backed) when a page enters a frame. The host mirror is exact while the page is
resident. The access mirror is a tag: the page's tag equals the epoch's (G_ACCESS_TAG)
only if its frame's access bit is set; it may differ while the bit is set (the hit then
reads the frame row and sets the tag), never the other way round. The epoch's end clears
the access bits and moves to a new tag, which invalidates every page's mirror without
visiting the pages.
"""

from __future__ import annotations

from balloonreplay.engine.flags import inline
from balloonreplay.engine.state import (
    ABIT_ACCESSED,
    F_ABIT,
    F_HOST,
    F_PAGE,
    G_ACCESS_TAG,
    P_FLAGS,
    PF_DIRTY,
    PF_FILE,
    PF_HOST_SHARED,
    PF_HOST_SWAPPED,
    PF_LOW_MASK,
    PF_TAG_LIMIT,
    PF_TAG_SHIFT,
    PF_WHERE_MASK,
    PF_WHERE_SHIFT,
    SHARED,
    SWAPPED,
)

HOST_MIRROR = PF_HOST_SWAPPED | PF_HOST_SHARED


@inline
def page_where(P, pg):
    return (P[pg, P_FLAGS] & PF_WHERE_MASK) >> PF_WHERE_SHIFT


@inline
def set_page_where(P, pg, where):
    P[pg, P_FLAGS] = (P[pg, P_FLAGS] & ~PF_WHERE_MASK) | (where << PF_WHERE_SHIFT)


@inline
def page_file(P, pg):
    """1 if the page is file-backed, else 0 (the trace's file flag)."""
    return P[pg, P_FLAGS] & PF_FILE


@inline
def set_page_file(P, pg, file_backed):
    P[pg, P_FLAGS] = (P[pg, P_FLAGS] & ~PF_FILE) | file_backed


@inline
def page_dirty(P, pg):
    return (P[pg, P_FLAGS] & PF_DIRTY) != 0


@inline
def set_page_dirty(P, pg, dirty):
    if dirty:
        P[pg, P_FLAGS] |= PF_DIRTY
    else:
        P[pg, P_FLAGS] &= ~PF_DIRTY


@inline
def host_mirror_bits(h):
    if h == SWAPPED:
        return PF_HOST_SWAPPED
    if h == SHARED:
        return PF_HOST_SHARED
    return 0


@inline
def access_mirrored(flags, tag):
    """The page flags say its frame's access bit is set (in the epoch of ``tag``)."""
    return (flags >> PF_TAG_SHIFT) == tag


@inline
def with_access_mirror(flags, tag):
    return (flags & PF_LOW_MASK) | (tag << PF_TAG_SHIFT)


@inline
def mirror_frame(F, P, f):
    """Frame f has just received a page: copy the frame's host state into the page's
    flags, with no access tag (the access that brought the page in sets it)."""
    pg = F[f, F_PAGE]
    P[pg, P_FLAGS] = (P[pg, P_FLAGS] & PF_LOW_MASK & ~HOST_MIRROR) | host_mirror_bits(F[f, F_HOST])


@inline
def next_access_tag(P, G):
    """The epoch's end has cleared every access bit: a new tag invalidates every page's
    access mirror at once. When the tags run out (after PF_TAG_LIMIT epochs) every
    page's tag is cleared, so an old tag can never equal a new one."""
    tag = G[G_ACCESS_TAG] + 1
    if tag == PF_TAG_LIMIT:
        for pg in range(P.shape[0]):
            P[pg, P_FLAGS] &= PF_LOW_MASK
        tag = 1
    G[G_ACCESS_TAG] = tag


@inline
def mirror_ok(F, P, G, f, pg):
    """The invariant the mirror keeps for page pg resident in frame f."""
    flags = P[pg, P_FLAGS]
    if flags & HOST_MIRROR != host_mirror_bits(F[f, F_HOST]):
        return False
    return not access_mirrored(flags, G[G_ACCESS_TAG]) or F[f, F_ABIT] & ABIT_ACCESSED != 0
