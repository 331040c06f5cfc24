"""The Triton kernels of :mod:`pyinfer.ops.yuv_triton` (imported only when the kernel is first used: Triton is
heavy to import, and absent where torch comes without it)."""

# ruff: noqa: E501

import triton
import triton.language as tl


@triton.jit
def rgb_at(y_ptr, u_ptr, v_ptr, b, yrow, cyn, cyf, xi, cxn, cxf, odd, mask,
           sy_b, sy_r, sy_c, su_b, su_r, su_c, sv_b, sv_r, sv_c,
           y_off, y_gain, c_gain, k_rv, k_bu, kr, kb, inv_kg,
           NEAREST: tl.constexpr, COSITED: tl.constexpr, FULL: tl.constexpr):  # fmt: skip
    luma = tl.load(y_ptr + b * sy_b + yrow * sy_r + xi * sy_c, mask=mask, other=0).to(tl.float32)
    if NEAREST:
        u = tl.load(u_ptr + b * su_b + cyn * su_r + cxn * su_c, mask=mask, other=0).to(tl.float32)
        v = tl.load(v_ptr + b * sv_b + cyn * sv_r + cxn * sv_c, mask=mask, other=0).to(tl.float32)
    else:
        # Vertical, then horizontal, each rounded to an integer (GStreamer's 8-bit resampler), as yuv_rgb_at.
        un_a = tl.load(u_ptr + b * su_b + cyn * su_r + cxn * su_c, mask=mask, other=0).to(tl.float32)
        uf_a = tl.load(u_ptr + b * su_b + cyf * su_r + cxn * su_c, mask=mask, other=0).to(tl.float32)
        un_b = tl.load(u_ptr + b * su_b + cyn * su_r + cxf * su_c, mask=mask, other=0).to(tl.float32)
        uf_b = tl.load(u_ptr + b * su_b + cyf * su_r + cxf * su_c, mask=mask, other=0).to(tl.float32)
        vn_a = tl.load(v_ptr + b * sv_b + cyn * sv_r + cxn * sv_c, mask=mask, other=0).to(tl.float32)
        vf_a = tl.load(v_ptr + b * sv_b + cyf * sv_r + cxn * sv_c, mask=mask, other=0).to(tl.float32)
        vn_b = tl.load(v_ptr + b * sv_b + cyn * sv_r + cxf * sv_c, mask=mask, other=0).to(tl.float32)
        vf_b = tl.load(v_ptr + b * sv_b + cyf * sv_r + cxf * sv_c, mask=mask, other=0).to(tl.float32)
        ua = tl.floor((3.0 * un_a + uf_a + 2.0) * 0.25)
        ub = tl.floor((3.0 * un_b + uf_b + 2.0) * 0.25)
        va = tl.floor((3.0 * vn_a + vf_a + 2.0) * 0.25)
        vb = tl.floor((3.0 * vn_b + vf_b + 2.0) * 0.25)
        if COSITED:
            u = tl.where(odd != 0, tl.floor((ua + ub + 1.0) * 0.5), ua)
            v = tl.where(odd != 0, tl.floor((va + vb + 1.0) * 0.5), va)
        else:
            u = tl.floor((3.0 * ua + ub + 2.0) * 0.25)
            v = tl.floor((3.0 * va + vb + 2.0) * 0.25)
    if FULL:
        yy = luma
        cb = u - 128.0
        cr = v - 128.0
    else:
        yy = (luma - y_off) * y_gain
        cb = (u - 128.0) * c_gain
        cr = (v - 128.0) * c_gain
    r = yy + k_rv * cr
    bl = yy + k_bu * cb
    g = (yy - kr * r - kb * bl) * inv_kg
    r = tl.minimum(tl.maximum(tl.floor(r + 0.5), 0.0), 255.0)
    g = tl.minimum(tl.maximum(tl.floor(g + 0.5), 0.0), 255.0)
    bl = tl.minimum(tl.maximum(tl.floor(bl + 0.5), 0.0), 255.0)
    return r, g, bl


@triton.jit
def yuv_letterbox(y_ptr, u_ptr, v_ptr, out_ptr, rows_ptr, cols_ptr, ly_ptr, lx_ptr, rh, rw,
                  sy_b, sy_r, sy_c, su_b, su_r, su_c, sv_b, sv_r, sv_c, so_b, so_c, so_r, so_x,
                  y_off, y_gain, c_gain, k_rv, k_bu, kr, kb, inv_kg, inv255,
                  TWO_Y: tl.constexpr, TWO_X: tl.constexpr, NEAREST: tl.constexpr, COSITED: tl.constexpr,
                  FULL: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    row = tl.program_id(0)
    b = row // rh
    oy = row % rh
    xs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = xs < rw
    # rows table: y0, y1, chroma near/far of y0, chroma near/far of y1; cols: x0, x1, chroma near/far and odd
    # of x0, of x1 (see _tables).
    y0 = tl.load(rows_ptr + oy * 6 + 0)
    c0n = tl.load(rows_ptr + oy * 6 + 2)
    c0f = tl.load(rows_ptr + oy * 6 + 3)
    x0 = tl.load(cols_ptr + xs * 8 + 0, mask=mask, other=0)
    d0n = tl.load(cols_ptr + xs * 8 + 2, mask=mask, other=0)
    d0f = tl.load(cols_ptr + xs * 8 + 3, mask=mask, other=0)
    o0 = tl.load(cols_ptr + xs * 8 + 6, mask=mask, other=0)
    r00, g00, b00 = rgb_at(y_ptr, u_ptr, v_ptr, b, y0, c0n, c0f, x0, d0n, d0f, o0, mask, sy_b, sy_r, sy_c, su_b, su_r, su_c, sv_b, sv_r, sv_c, y_off, y_gain, c_gain, k_rv, k_bu, kr, kb, inv_kg,
                           NEAREST, COSITED, FULL)  # fmt: skip
    if TWO_X:
        x1 = tl.load(cols_ptr + xs * 8 + 1, mask=mask, other=0)
        d1n = tl.load(cols_ptr + xs * 8 + 4, mask=mask, other=0)
        d1f = tl.load(cols_ptr + xs * 8 + 5, mask=mask, other=0)
        o1 = tl.load(cols_ptr + xs * 8 + 7, mask=mask, other=0)
        lx = tl.load(lx_ptr + xs, mask=mask, other=0.0)
        r01, g01, b01 = rgb_at(y_ptr, u_ptr, v_ptr, b, y0, c0n, c0f, x1, d1n, d1f, o1, mask, sy_b, sy_r, sy_c, su_b, su_r, su_c, sv_b, sv_r, sv_c, y_off, y_gain, c_gain, k_rv, k_bu, kr, kb, inv_kg,
                               NEAREST, COSITED, FULL)  # fmt: skip
        r = (1.0 - lx) * r00 + lx * r01
        g = (1.0 - lx) * g00 + lx * g01
        bl = (1.0 - lx) * b00 + lx * b01
    else:
        r, g, bl = r00, g00, b00
    if TWO_Y:
        y1 = tl.load(rows_ptr + oy * 6 + 1)
        c1n = tl.load(rows_ptr + oy * 6 + 4)
        c1f = tl.load(rows_ptr + oy * 6 + 5)
        ly = tl.load(ly_ptr + oy)
        r10, g10, b10 = rgb_at(y_ptr, u_ptr, v_ptr, b, y1, c1n, c1f, x0, d0n, d0f, o0, mask, sy_b, sy_r, sy_c, su_b, su_r, su_c, sv_b, sv_r, sv_c, y_off, y_gain, c_gain, k_rv, k_bu, kr, kb, inv_kg,
                               NEAREST, COSITED, FULL)  # fmt: skip
        if TWO_X:
            r11, g11, b11 = rgb_at(y_ptr, u_ptr, v_ptr, b, y1, c1n, c1f, x1, d1n, d1f, o1, mask, sy_b, sy_r, sy_c, su_b, su_r, su_c, sv_b, sv_r, sv_c, y_off, y_gain, c_gain, k_rv, k_bu, kr, kb, inv_kg,
                                   NEAREST, COSITED, FULL)  # fmt: skip
            r10 = (1.0 - lx) * r10 + lx * r11
            g10 = (1.0 - lx) * g10 + lx * g11
            b10 = (1.0 - lx) * b10 + lx * b11
        r = (1.0 - ly) * r + ly * r10
        g = (1.0 - ly) * g + ly * g10
        bl = (1.0 - ly) * bl + ly * b10
    dt = out_ptr.dtype.element_ty
    base = out_ptr + b * so_b + oy * so_r + xs * so_x
    # Rounded to the output's type, then scaled in float32 and rounded again: as _scaled_into.
    tl.store(base, (r.to(dt).to(tl.float32) * inv255).to(dt), mask=mask)
    tl.store(base + so_c, (g.to(dt).to(tl.float32) * inv255).to(dt), mask=mask)
    tl.store(base + 2 * so_c, (bl.to(dt).to(tl.float32) * inv255).to(dt), mask=mask)
