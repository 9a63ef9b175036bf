"""The content model: which content hash a page holds after each access.

A content id is a bijective 64-bit mix of a structured value

    kind (2 bits) | owner (16 bits: VM index or image id) | index (46 bits)

so ids look like hashes yet two different structured values can never collide: private
contents of different VMs never match, image-pool contents of one image always match
across its VMs, and contents of different images never match. The mix maps 0 to 0 and
nothing else to 0, and every structured value has a non-zero kind, so 0 stays the zero
page alone.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from balloonreplay.traces.generators.spec import ContentModel

KIND_POOL = 1  # image pool; owner = image id; index = pool slot
KIND_PRIVATE = 2  # a VM's page before any write; owner = VM index; index = page
KIND_WRITTEN = 3  # fresh content of a write; owner = VM index; index = write counter

WRITE_FRESH = 0  # the write gives the page new unique content
WRITE_KEEP = 1  # the write leaves the content as it was (same bytes written back)
WRITE_ZERO = 2  # the write zeroes the page (a guest zeroing freed memory)
WRITE_MODE_CODES = {"fresh": WRITE_FRESH, "keep": WRITE_KEEP, "zero": WRITE_ZERO}

_MASK64 = (1 << 64) - 1
_U53 = 1 << 53


def mix64_int(z: int) -> int:
    """splitmix64's finalizer on Python ints (a bijection of uint64 with 0 -> 0)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


@njit(cache=True, inline="always")
def _mix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def _content_id(kind, owner, index):
    return _mix64((np.uint64(kind) << np.uint64(62)) | (np.uint64(owner) << np.uint64(46)) | index)


class VmContentState:
    """Per-VM content state carried across chunks: what each page holds once written."""

    def __init__(
        self, vm_index: int, image_id: int, model: ContentModel, page_space: int, seed: int
    ):
        self.vm_index = vm_index
        self.image_id = image_id
        self.pool_pages = model.image_pool_pages
        # Membership tests compare the top 53 bits of a hash with a threshold, which
        # handles fractions 0 and 1 exactly.
        self.image_threshold = int(model.image_fraction * _U53)
        rest = 1.0 - model.image_fraction
        zero_given_not_image = min(1.0, model.zero_fraction / rest) if rest > 0 else 0.0
        self.zero_threshold = int(zero_given_not_image * _U53)
        # Image membership is salted by image (not VM) so every VM of an image agrees on
        # which pages hold image content; the zero-page choice is salted per VM.
        self.image_salt = mix64_int(seed * 0x9E3779B97F4A7C15 + 0x1000 + image_id)
        self.vm_salt = mix64_int(seed * 0x9E3779B97F4A7C15 + 0x2000_0000 + vm_index)
        self.current = np.zeros(page_space, dtype=np.uint64)
        self.written = np.zeros(page_space, dtype=np.bool_)
        self.write_counter = np.zeros(1, dtype=np.uint64)

    def contents(
        self, pages: np.ndarray, writes: np.ndarray, write_modes: np.ndarray
    ) -> np.ndarray:
        """Content after each access (in order), updating the carried state."""
        out = np.empty(len(pages), dtype=np.uint64)
        _fill_contents(
            pages.astype(np.uint64, copy=False),
            writes,
            write_modes,
            out,
            self.current,
            self.written,
            self.write_counter,
            np.uint64(self.vm_index),
            np.uint64(self.image_id),
            np.uint64(self.pool_pages),
            np.uint64(self.image_threshold),
            np.uint64(self.zero_threshold),
            np.uint64(self.image_salt),
            np.uint64(self.vm_salt),
        )
        return out


@njit(cache=True)
def _initial_content(
    page, vm_index, image_id, pool_pages, image_threshold, zero_threshold, image_salt, vm_salt
):
    h_image = _mix64(image_salt ^ _mix64(page + np.uint64(1)))
    if (h_image >> np.uint64(11)) < image_threshold:
        if pool_pages == np.uint64(0):
            slot = page
        else:
            slot = _mix64(h_image) % pool_pages
        return _content_id(KIND_POOL, image_id, slot)
    h_vm = _mix64(vm_salt ^ _mix64(page + np.uint64(1)))
    if (h_vm >> np.uint64(11)) < zero_threshold:
        return np.uint64(0)
    return _content_id(KIND_PRIVATE, vm_index, page)


@njit(cache=True)
def _fill_contents(
    pages,
    writes,
    write_modes,
    out,
    current,
    written,
    write_counter,
    vm_index,
    image_id,
    pool_pages,
    image_threshold,
    zero_threshold,
    image_salt,
    vm_salt,
):
    counter = write_counter[0]
    for i in range(len(pages)):
        page = pages[i]
        if writes[i] and write_modes[i] == WRITE_FRESH:
            content = _content_id(KIND_WRITTEN, vm_index, counter)
            counter += np.uint64(1)
            current[page] = content
            written[page] = True
        elif writes[i] and write_modes[i] == WRITE_ZERO:
            content = np.uint64(0)
            current[page] = content
            written[page] = True
        elif written[page]:
            content = current[page]
        else:
            content = _initial_content(
                page,
                vm_index,
                image_id,
                pool_pages,
                image_threshold,
                zero_threshold,
                image_salt,
                vm_salt,
            )
        out[i] = content
    write_counter[0] = counter
