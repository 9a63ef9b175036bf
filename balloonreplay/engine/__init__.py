"""The numba replay engine: flat arrays, intrusive lists, one kernel call per stretch of trace.

Modules, one concern each: ``flags`` (compile options), ``state`` (array layout and
allocation), ``pages`` (packed page flags and the page's mirror of its frame), ``dlist``
(intrusive doubly-linked lists), ``guest_lru``/``guest_fifo``/``guest_clock``/
``guest_twolist`` (guest policies behind ``guest``), ``hashtable`` (open addressing for
share keys), ``host`` (machine pages, host swap, COW), ``sharing`` (the scanner),
``balloon``, ``access`` (one guest access), ``hits`` (runs of plain hits and faults),
``kernel`` (the quantum and epoch loop), ``checks`` (invariants). The semantics are specified
in balloonreplay/reference.py. Importing this package does not compile anything.
"""
