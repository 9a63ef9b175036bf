"""A software prefetch hint (LLVM ``llvm.prefetch``) for numba kernels.

The per-access path misses the cache on page rows (the accessed page's and its list
neighbours') and, on a fault, on the victim's frame row and, when contents are tracked,
on the cold rows of the victim, its frame and the page coming in; the sharing scanner
misses on the rows of each frame it visits. Issuing some of those loads ahead of time
overlaps the misses (hits.prefetch_page, hits.prefetch_victim and sharing.scan_step say
which; hits.PF_PAGE why no more). A prefetch has no semantics: it never faults and never
changes a value.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch_row(typingctx, arr, row):
    """Prefetch the cache line holding ``arr[row, 0]`` (a 2-D C-contiguous array)."""
    if not isinstance(arr, types.Array) or arr.ndim != 2 or not isinstance(row, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        _prefetch(
            context, builder, signature.args[0], ary, index, context.get_constant(types.intp, 0)
        )
        return context.get_dummy_value()

    return types.void(arr, row), codegen


@intrinsic
def prefetch_cell(typingctx, arr, row, col):
    """Prefetch the cache line holding ``arr[row, col]``: the second line of a row wider
    than what is left of the first (the 48- and 72-byte cold rows)."""
    if (
        not isinstance(arr, types.Array)
        or arr.ndim != 2
        or not isinstance(row, types.Integer)
        or not isinstance(col, types.Integer)
    ):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        column = context.cast(builder, args[2], signature.args[2], types.intp)
        _prefetch(context, builder, signature.args[0], ary, index, column)
        return context.get_dummy_value()

    return types.void(arr, row, col), codegen


def _prefetch(context, builder, arytype, ary, row, col):
    """Emit ``llvm.prefetch`` (read, highest locality, data) of ``&ary[row, col]``."""
    ptr = cgutils.get_item_pointer2(
        context,
        builder,
        data=ary.data,
        shape=cgutils.unpack_tuple(builder, ary.shape, 2),
        strides=cgutils.unpack_tuple(builder, ary.strides, 2),
        layout=arytype.layout,
        inds=[row, col],
        wraparound=False,
    )
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
    builder.call(
        fn,
        [
            builder.bitcast(ptr, i8p),
            ir.Constant(i32, 0),
            ir.Constant(i32, 3),
            ir.Constant(i32, 1),
        ],
    )
