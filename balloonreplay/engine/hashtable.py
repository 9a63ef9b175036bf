"""Open-addressing hash tables keyed by share key (content, domain), in an int64 array
``T[slot] = (content, domain, value)`` with value 0 meaning empty. Linear probing; deletion
shifts later entries back, so there are no tombstones. The capacity (a power of two, at
least twice the number of frames) bounds the load at one half: there are never more
shared pages or candidates than frames. Lookups give the same answers as a Python dict,
and nothing iterates the table, so its layout never shows in the results."""

from __future__ import annotations

from balloonreplay.engine.flags import inline

# splitmix64's constants as signed int64 (uint64 literals would make numba use floats).
GOLDEN_SIGNED = -7046029254386353131
MIX1_SIGNED = -4658895280553007687


@inline
def _slot(content, domain, mask):
    x = content * GOLDEN_SIGNED + domain * 0x632BE59BD9B4E019
    x ^= x >> 29
    x *= MIX1_SIGNED
    x ^= x >> 32
    return x & mask


@inline
def ht_find(T, mask, content, domain):
    i = _slot(content, domain, mask)
    while T[i, 2] != 0:
        if T[i, 0] == content and T[i, 1] == domain:
            return i
        i = (i + 1) & mask
    return -1


@inline
def ht_insert(T, mask, content, domain, value):
    """Insert a key known to be absent."""
    i = _slot(content, domain, mask)
    while T[i, 2] != 0:
        i = (i + 1) & mask
    T[i, 0] = content
    T[i, 1] = domain
    T[i, 2] = value


@inline
def ht_delete(T, mask, i):
    """Remove the entry in slot i (backward-shift deletion)."""
    T[i, 2] = 0
    j = i
    while True:
        j = (j + 1) & mask
        if T[j, 2] == 0:
            return
        home = _slot(T[j, 0], T[j, 1], mask)
        # Move j back to i unless its home lies cyclically in (i, j].
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            T[i, 0] = T[j, 0]
            T[i, 1] = T[j, 1]
            T[i, 2] = T[j, 2]
            T[j, 2] = 0
            i = j
