"""Intrusive doubly-linked lists over the rows of an array (pages for the guest policies,
cold frame rows for the host list): links in two fields of a row, ends and count in
three VM fields. Head = most recently inserted. O(1) push, remove and move."""

from __future__ import annotations

from balloonreplay.engine.flags import inline
from balloonreplay.engine.state import NIL


@inline
def push_head(F, VS, v, f, prev, nxt, head, tail, count):
    h = VS[v, head]
    F[f, prev] = NIL
    F[f, nxt] = h
    if h != NIL:
        F[h, prev] = f
    else:
        VS[v, tail] = f
    VS[v, head] = f
    VS[v, count] += 1


@inline
def unlink(F, VS, v, f, prev, nxt, head, tail, count):
    p = F[f, prev]
    n = F[f, nxt]
    if p != NIL:
        F[p, nxt] = n
    else:
        VS[v, head] = n
    if n != NIL:
        F[n, prev] = p
    else:
        VS[v, tail] = p
    F[f, prev] = NIL
    F[f, nxt] = NIL
    VS[v, count] -= 1


@inline
def move_to_head(F, VS, v, f, prev, nxt, head, tail, count):
    if VS[v, head] == f:
        return
    unlink(F, VS, v, f, prev, nxt, head, tail, count)
    push_head(F, VS, v, f, prev, nxt, head, tail, count)
