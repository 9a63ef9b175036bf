"""The packed page flags (P_FLAGS), and what they keep of the page's frame.

A plain hit must know whether its frame is host-swapped or shared, and whether the frame's
access bit is already set (the access that sets it counts the frame as touched in the
epoch); reading the frame row for that would be a second cache line per access, and the
frame's first access in every epoch would need it. So the page row carries both:

- the host mirror, a copy of the frame's host state, kept by ``set_host`` and set by
  ``mirror_frame`` (in ``access.fault``; ``hits.plain_fault`` writes the same) when a page
  enters a frame; exact while the page is resident;
- the frame's access bit itself, as an epoch tag: the frame that holds page pg has been
  accessed in this epoch if and only if pg's tag equals the epoch's (G_ACCESS_TAG).

A frame that holds no page keeps the bit in its own row (F_ACCESS), as a tag too: a page
leaving its frame leaves its tag there (``leave_frame``), and a page entering a frame
takes the frame's tag if it is the epoch's (``mirror_frame``), so a frame accessed by a
page that has since left stays accessed (``frame_accessed``). Hence a page whose tag is
not the epoch's sits in a frame not accessed in the epoch: the hit sets the tag and counts
the frame as touched without reading the frame row. The epoch's end clears every access
bit by moving to a new tag, visiting no row.
"""

from __future__ import annotations

from balloonreplay.engine.flags import inline
from balloonreplay.engine.state import (
    F_ACCESS,
    F_HOST,
    F_PAGE,
    FA_SAMPLE_TOUCHED,
    FA_TAG_SHIFT,
    G_ACCESS_TAG,
    NIL,
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
def frame_tag(F, f):
    return F[f, F_ACCESS] >> FA_TAG_SHIFT


@inline
def entry_tag(F, G, f):
    """The access tag a page entering frame f takes: the epoch's if the frame has been
    accessed in it (by a page that has left), else none."""
    tag = G[G_ACCESS_TAG]
    return tag if frame_tag(F, f) == tag else 0


@inline
def leave_frame(F, P, G, f, pg):
    """Page pg leaves frame f: the frame keeps the access bit the page's tag held."""
    tag = G[G_ACCESS_TAG]
    if access_mirrored(P[pg, P_FLAGS], tag):
        F[f, F_ACCESS] = (F[f, F_ACCESS] & FA_SAMPLE_TOUCHED) | (tag << FA_TAG_SHIFT)


@inline
def frame_accessed(F, P, G, f):
    """Frame f's access bit: set if the frame has been accessed in this epoch."""
    pg = F[f, F_PAGE]
    if pg != NIL:
        return access_mirrored(P[pg, P_FLAGS], G[G_ACCESS_TAG])
    return frame_tag(F, f) == G[G_ACCESS_TAG]


@inline
def mirror_frame(F, P, G, f):
    """Frame f has just received a page: copy the frame's host state into the page's
    flags, and the frame's access tag (the access that brought the page in sets the
    epoch's tag if the frame had none)."""
    pg = F[f, F_PAGE]
    P[pg, P_FLAGS] = (
        (P[pg, P_FLAGS] & PF_LOW_MASK & ~HOST_MIRROR)
        | host_mirror_bits(F[f, F_HOST])
        | (entry_tag(F, G, f) << PF_TAG_SHIFT)
    )


@inline
def next_access_tag(F, P, G):
    """The epoch's end: a new tag clears every frame's access bit at once. When the tags
    run out (after PF_TAG_LIMIT epochs) every page's and frame's tag is cleared, so an
    old tag can never equal a new one."""
    tag = G[G_ACCESS_TAG] + 1
    if tag == PF_TAG_LIMIT:
        for pg in range(P.shape[0]):
            P[pg, P_FLAGS] &= PF_LOW_MASK
        for f in range(F.shape[0]):
            F[f, F_ACCESS] &= FA_SAMPLE_TOUCHED
        tag = 1
    G[G_ACCESS_TAG] = tag


@inline
def mirror_ok(F, P, G, f, pg):
    """The invariant the mirror keeps for page pg resident in frame f: the host state is
    the frame's, and a frame that kept the epoch's tag from a page that left passed it
    to pg when pg entered."""
    flags = P[pg, P_FLAGS]
    if flags & HOST_MIRROR != host_mirror_bits(F[f, F_HOST]):
        return False
    tag = G[G_ACCESS_TAG]
    return access_mirrored(flags, tag) or frame_tag(F, f) != tag
