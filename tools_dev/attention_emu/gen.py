#!/usr/bin/env python3
"""Turns a CUDA file of engine/ops/attention/ (attention.cu, attention_mma.cu)
into a host translation unit for the emulation harness, without touching the
production files:
  * extern __shared__ arrays -> the emulated block's shared memory;
  * copy16_async / async_commit / async_wait -> the emulated cp.async groups;
  * ldsm_x4<kTransposed> (or the older ldsm_x4 / ldsm_x4_trans twins) and
    mma_bf16 -> the emulated warp matrix instructions;
  * kernel<<<grid, block, smem, stream>>>(args) -> emu::launcher(...)(args);
  * #include "engine/ops/attention/attention_cuda.cuh" -> that header, inlined
    and processed the same way (its launch helper).
Everything else (device maths, host-side views, alignment fallback, launch
configuration) is compiled as written. --plant NAME plants a known bug, to
show that the harness catches it (a plant applies to the file that holds its
pattern; gen.py fails if neither the file nor the header does).
usage: gen.py SRC OUT [--plant NAME]"""
import os
import re
import sys

PLANTS = {
    # tile loads step by the contiguous row length instead of the view's token stride
    "load-token-stride": ("const float* from = src + (row0 + r) * ld + c4;", "const float* from = src + (row0 + r) * D + c4;"),
    # stores of out / dq / dk / dv step by D instead of the view's token stride
    "store-token-stride": ("for (int y = 0; y < 4; ++y, to += 4 * ld) {", "for (int y = 0; y < 4; ++y, to += 4 * D) {"),
    # a (batch x head)'s rows resolved with the token stride in place of the head stride
    "head-stride": ("return view.rows(bh / heads, bh % heads);",
                    "return view.data + bh / heads * view.batch + bh % heads * view.token;"),
    # the delta kernel reads out's rows as if contiguous (row stride d)
    "delta-stride": ("const float* o = head_rows(out, bh, heads) + i * out.token;",
                     "const float* o = head_rows(out, bh, heads) + i * d;"),
    # the forward reads V before waiting for its copies
    "missing-wait": ("      async_wait<1>();  // this tile's V\n", ""),
    # the host hands misaligned input views to the kernels (no float4 fallback)
    "no-fallback": ("Tensor float4_input(const Tensor& t) { return float4_rows(t) ? t : t.clone(); }",
                    "Tensor float4_input(const Tensor& t) { return t; }"),
    # --- attention_mma.cu
    # P's A fragment takes the wrong C registers for a[2] (keys 8-15 of the k-step)
    "mma-a-index": ("  a[2] = pack_bf16(hi[0], hi[1]);", "  a[2] = pack_bf16(lo[2], lo[3]);"),
    # the V-like B fragments address the two 8-row halves as if they were the two d blocks
    "mma-trans-rows": ("const uint16_t* p = rows + (8 * (l.ld_mat % 2) + l.ld_row) * ld<D>() + 8 * (l.ld_mat / 2);\n#pragma unroll\n  for (int j2",
                       "const uint16_t* p = rows + (8 * (l.ld_mat / 2) + l.ld_row) * ld<D>() + 8 * (l.ld_mat % 2);\n#pragma unroll\n  for (int j2"),
    # the forward's tile loop without its barrier: the next tile is read before every warp has stored it
    "mma-missing-barrier": ("        next.store(StreamBuffer<D>(buffers, tile + 1));\n        __syncthreads();  // the next K, V and bias are in place",
                            "        next.store(StreamBuffer<D>(buffers, tile + 1));\n        // (barrier dropped)"),
    # dK/dV: both columns of a C pair read the lse of the even query
    "mma-dkdv-lse": ("terms.col_lse[j][col] = lse_s[col0 + 2 * l.t + col];", "terms.col_lse[j][col] = lse_s[col0 + 2 * l.t];"),
    # dQ: the key bias is skipped (masked keys count)
    "mma-dq-bias": ("terms.col_bias[j][col] = bias_s[col0 + 2 * l.t + col];", "terms.col_bias[j][col] = 0.0f;"),
}

HEADER = '#include "engine/ops/attention/attention_cuda.cuh"\n'


def replace_function(src, head_regex, replacement):
    m = re.search(head_regex, src)
    if not m:
        return src, False
    end = src.index("\n}\n", m.end()) + 3
    return src[: m.start()] + replacement + src[end:], True


def process(src):
    src = src.replace("extern __shared__ float4 shared_mem[];", "float4* const shared_mem = ::emu::block_shared();")
    src, _ = replace_function(src, r"__device__ __forceinline__ void copy16_async\(float\* dst, const float\* src, bool valid\) \{",
                              "__device__ __forceinline__ void copy16_async(float* dst, const float* src, bool valid) {\n"
                              "  ::emu::copy16_async(dst, src, valid);\n}\n")
    src, _ = replace_function(src, r"__device__ __forceinline__ void async_commit\(\) \{",
                              "__device__ __forceinline__ void async_commit() { ::emu::async_commit(); }\n")
    src, _ = replace_function(src, r"template <int Pending>\n__device__ __forceinline__ void async_wait\(\) \{",
                              "template <int Pending>\n__device__ __forceinline__ void async_wait() { ::emu::async_wait(Pending); }\n")
    # ldsm_x4<kTransposed> (one template for ldmatrix and ldmatrix.trans)
    src, templated = replace_function(src, r"template <bool kTransposed>\n__device__ __forceinline__ void ldsm_x4\(uint32_t \(&r\)\[4\], const uint16_t\* row\) \{",
                                      "template <bool kTransposed>\n__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const uint16_t* row) {\n"
                                      "  ::emu::ldmatrix_x4(r, kTransposed, row);\n}\n")
    for name, trans in () if templated else (("ldsm_x4", "false"), ("ldsm_x4_trans", "true")):
        src, _ = replace_function(src, r"__device__ __forceinline__ void %s\(uint32_t \(&r\)\[4\], const uint16_t\* row\) \{" % name,
                                  "__device__ __forceinline__ void %s(uint32_t (&r)[4], const uint16_t* row) {\n"
                                  "  ::emu::ldmatrix_x4(r, %s, row);\n}\n" % (name, trans))
    src, _ = replace_function(src, r"__device__ __forceinline__ void mma_bf16\(float \(&c\)\[4\], const uint32_t \(&a\)\[4\], uint32_t b0, uint32_t b1\) \{",
                              "__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {\n"
                              "  ::emu::mma_m16n8k16_bf16(c, a, b0, b1);\n}\n")
    src = re.sub(r"(\w+)<<<(.*?)>>>\(", r"::emu::launcher(\1, \2)(", src)
    return src


def main():
    src_path, out_path = sys.argv[1], sys.argv[2]
    plant = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--plant" else None
    src = open(src_path).read()
    header_path = os.path.join(os.path.dirname(src_path), "attention_cuda.cuh")
    header = open(header_path).read()

    planted = False
    if plant:
        old, new = PLANTS[plant]
        for which in ("src", "header"):
            text = src if which == "src" else header
            if text.count(old) == 1:
                text = text.replace(old, new)
                planted = True
                if which == "src":
                    src = text
                else:
                    header = text

    assert src.count(HEADER) == 1, f"{src_path} must include attention_cuda.cuh once"
    header = process(header).replace("#pragma once\n", "")
    src = process(src).replace(HEADER, "// ---- attention_cuda.cuh, inlined by gen.py\n" + header + "// ---- end of attention_cuda.cuh\n")
    assert "<<<" not in src and "extern __shared__" not in src
    src = src.replace("#include <cuda_runtime.h>\n", "#include <cuda_runtime.h>\n\n#include \"emu_runtime.h\"\n", 1)

    open(out_path, "w").write(f"// GENERATED by tools_dev/attention_emu/gen.py from {src_path}"
                              f"{' with planted bug ' + plant if planted else ''}: do not edit.\n" + src)
    # A plant whose pattern is in neither file of this translation unit: the
    # other file carries it (build.sh generates both and checks one took it).
    if plant and not planted:
        print(f"plant {plant}: not in {src_path}")


if __name__ == "__main__":
    main()
