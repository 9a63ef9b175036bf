"""Small, obviously correct models that tests compare against."""

from collections import OrderedDict


def lru_misses(pages, capacity_pages):
    """An independent LRU: count misses of an access sequence."""
    cache = OrderedDict()
    misses = 0
    for p in pages:
        if p in cache:
            cache.move_to_end(p)
        else:
            misses += 1
            cache[p] = True
            if len(cache) > capacity_pages:
                cache.popitem(last=False)
    return misses
