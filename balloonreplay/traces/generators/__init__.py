"""Seeded synthetic guest workloads, written as canonical traces.

``balloonreplay generate WORKLOAD.yaml -o OUT.parquet --seed S`` reads a workload spec, a
YAML mapping::

    name: web-farm                 # optional; default: the file name
    content:                       # page-content model, default for every VM type
      zero_fraction: 0.15          #   pages that are zero on first touch
      image_fraction: 0.30         #   pages holding content from the VM's image
      image_pool_pages: 0          #   0: image content is per guest page (page p of every
                                   #   VM of the image matches); N: drawn from N contents
    vm_types:
      web:
        memory: 1GiB               # configured guest memory (size, or pages: 262144)
        image: ubuntu-22.04        # VMs of one image share its pool contents
        mean_interaccess_ns: 100   # mean gap between accesses (geometric in ns), per VM
        repeat: 1                  # run the phase list this many times
        content: {zero_fraction: 0.2}   # optional override of the workload's content
        phases:                    # run in order
          - {kind: boot, footprint: 256MiB}          # one read pass: first touches
          - {kind: idle, duration_ns: 50_000_000}    # no accesses for 50 ms
          - kind: zipf                               # Zipf hot set
            footprint: 512MiB
            alpha: 0.9
            write_fraction: 0.3
            accesses: 2_000_000                      # or duration_ns: (active time)
            shift: {every_accesses: 500_000, pages: 16MiB}   # working-set drift
            burst: {on_ns: 1_000_000, off_ns: 4_000_000}    # bursts of activity
    vms:
      - {type: web, count: 4, start_ns: 0, stagger_ns: 1_000_000}

Phase kinds, each over the pages ``offset .. offset + footprint - 1`` of the VM (sizes
like ``64MiB`` or page counts; ``offset`` defaults to 0):

- ``zipf``: ranks drawn with P(r) ~ (r+1)^-alpha, scattered over the footprint by a
  seeded bijection; ``alpha`` required.
- ``uniform``: every page of the footprint equally likely.
- ``scan``: sequential, wrapping; pages are file-backed (``file_backed: false`` for an
  anonymous scan). File-backed and anonymous regions of a VM type must not overlap.
- ``boot``: one sequential read pass (``accesses`` defaults to the footprint): each page
  takes its initial content. Follow it with ``idle`` for an idle-after-boot VM.
- ``heap``: the live heap grows linearly to the footprint over the first
  ``grow_fraction`` (0.5) of the accesses, then shrinks to nothing over the rest (with
  ``grow_fraction: 1`` there is no rest: it only grows and stays allocated, which
  ``release: zero`` or ``free`` refuse, having nothing to release); a growth step is an
  allocation write to the new top page, other accesses hit the live heap uniformly;
  ``release: zero`` makes each shrink step a write of the zero page (a guest scrubbing
  freed memory), ``release: free`` makes it a free event for that page (the guest returns
  the frame to its free list: what free page reporting and demand-following balloon
  policies react to), ``release: drop`` (default) just stops touching freed pages.
- ``idle``: ``duration_ns`` of silence; no other keys.

Every access phase takes ``accesses`` (or ``duration_ns`` of active time, converted at
the mean inter-access time), ``write_fraction`` (default 0), ``write_content``
(``fresh``: a write gives the page new unique content, the default; ``keep``: content
unchanged; ``zero``: the write zeroes the page), ``mean_interaccess_ns`` (overrides the
VM type's), ``burst`` and, for zipf and uniform, ``shift``.

Content: a page's content before its first write is zero, its image's pool content, or
private to its VM, by the fractions above (image membership is decided per image and
page, so all VMs of an image agree; see ``content.py`` for why ids never collide).

Determinism: the same spec and seed give the same bytes. VM i draws from PCG64 streams
seeded by (seed, i, phase, repetition, purpose); chunking never changes the result.
Rows are ordered by (t_ns, vm) and generated in chunks, so trace length is not bounded
by memory. The trace's metadata records the spec, seed, per-VM configured memory, VM
names and images.
"""

from balloonreplay.traces.generators.spec import WorkloadSpec, load_spec, parse_spec
from balloonreplay.traces.generators.workload import (
    DEFAULT_CHUNK_ACCESSES,
    GENERATOR_SOURCE,
    generate_batches,
    generate_trace,
    workload_metadata,
)

__all__ = [
    "DEFAULT_CHUNK_ACCESSES",
    "GENERATOR_SOURCE",
    "WorkloadSpec",
    "generate_batches",
    "generate_trace",
    "load_spec",
    "parse_spec",
    "workload_metadata",
]
