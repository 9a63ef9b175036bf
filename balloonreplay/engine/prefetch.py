"""A software prefetch hint (LLVM ``llvm.prefetch``) for numba kernels.

The per-access path misses the cache on page rows (the accessed page's and its list
neighbours') and, on a fault, on the victim's frame row; issuing some of those loads
ahead of time overlaps the misses (hits.prefetch_page and hits.prefetch_victim say which; hits.PF_PAGE why no more). A
prefetch has no semantics: it never faults and never changes a value.
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
        zero = ir.Constant(ir.IntType(64), 0)
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = cgutils.get_item_pointer2(
            context,
            builder,
            data=ary.data,
            shape=cgutils.unpack_tuple(builder, ary.shape, 2),
            strides=cgutils.unpack_tuple(builder, ary.strides, 2),
            layout=signature.args[0].layout,
            inds=[index, zero],
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
        return context.get_dummy_value()

    return types.void(arr, row), codegen
