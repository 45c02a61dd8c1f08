// How the recurrent loops (recurrent.cc) store the operands of their per-step product and multiply them: the
// weight W packed into 16-unit panels once per call, and each step's h_{t-1} (forward) or d_rec (backward) in a
// k-major copy. Two formats, chosen per call:
//
//   F32Operands   float32 operands and sums: W's values as given (float32, or bf16 weights widened exactly).
//   Bf16Operands  bf16 operands in pairs along the depth, float32 sums (AVX512-BF16's dot-product instruction,
//                 twice the multiply-adds per instruction): W rounded to bf16 (exact for bf16 weights) and h or
//                 d_rec rounded to bf16 as they are copied, the rounding XLA's bf16 loop applies where h enters
//                 its product. Needs an even depth, so the loops' units never split a pair between chunks.
//
// A format provides Elem (the stored type), pack_gate_panels / pack_column_panels (W into panels), to_k_major
// (a chunk's units of one step into the copy) and product (all rows of the copy times one panel). With AVX-512
// the packing and copies are vector loads written down columns (scatters); they run once per call and once per
// step and chunk, and scalar they took a sixth of a bf16 loop's time (B=32, H=256, T=50).
#pragma once

#include "simd.h"

namespace {

#if defined(__AVX512F__)
// The element offsets i·stride, i < 16, of a column: where a scatter writes one row down it.
inline __m512i column_offsets(long stride) {
  return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                            _mm512_set1_epi32(static_cast<int>(stride)));
}

// dst[i·stride] = src[i] for i < n (n <= 16): one row of W or h written down a column of a panel or copy.
inline void scatter_column(float* dst, long stride, const float* src, int n) {
  _mm512_mask_i32scatter_ps(dst, static_cast<__mmask16>((1u << n) - 1), column_offsets(stride),
                            reinterpret_cast<__m512>(load_n(src, n)), 4);
}
#endif

// row_fn(panel, c, unit, row) for unit row c of every gate panel in [first, last): `panel` the offset (in
// elements) of panel (g, p), which packs rows g·H + 16p + c of W; `row` that row (read only when unit < H).
template <typename RowFn>
void for_each_panel_row(const float* W, int gates, long hidden, long panels, long first, long last, RowFn&& row_fn) {
  for (int g = 0; g < gates; ++g) {
    for (long p = first; p < last; ++p) {
      for (int c = 0; c < kLanes; ++c) {
        const long unit = p * kLanes + c;
        row_fn((g * panels + p) * hidden * kLanes, c, unit, W + (g * hidden + std::min(unit, hidden - 1)) * hidden);
      }
    }
  }
}

// The float32 format: panels packed[.][k][16], copies copy[k·batch + b].
struct F32Operands {
  using Elem = float;

  // packed[g][p][k][16] = W[g·H + 16p + c, k] (zero beyond H) for panels [first, last) of each gate: the product
  // h W^T, one 16-unit panel of one gate at a time.
  static void pack_gate_panels(const float* W, int gates, long hidden, long panels, long first, long last,
                               float* packed) {
    for_each_panel_row(W, gates, hidden, panels, first, last, [&](long offset, int c, long unit, const float* row) {
      float* panel = packed + offset;
#if defined(__AVX512F__)
      if (unit < hidden) {
        for (long k = 0; k < hidden; k += kLanes) {
          scatter_column(panel + k * kLanes + c, kLanes, row + k, static_cast<int>(std::min<long>(kLanes, hidden - k)));
        }
        return;
      }
#endif
      for (long k = 0; k < hidden; ++k) panel[k * kLanes + c] = unit < hidden ? row[k] : 0.0f;
    });
  }

  // packed[p][n][16] = W[n, 16p + c] (zero beyond H) for panels [first, last): the product d W over all n < rows.
  static void pack_column_panels(const float* W, long rows, long hidden, long first, long last, float* packed) {
    for (long p = first; p < last; ++p) {
      const int n_units = static_cast<int>(std::min<long>(kLanes, hidden - p * kLanes));
      for (long n = 0; n < rows; ++n) {
        *reinterpret_cast<v16*>(packed + (p * rows + n) * kLanes) = load_n(W + n * hidden + p * kLanes, n_units);
      }
    }
  }

  // dst[k·batch + b] = src[b·ld_src + k] for every row b and k in [begin, end).
  static void to_k_major(float* dst, const float* src, long ld_src, long batch, long begin, long end) {
    for (long b = 0; b < batch; ++b) {
#if defined(__AVX512F__)
      for (long k = begin; k < end; k += kLanes) {
        scatter_column(dst + k * batch + b, batch, src + b * ld_src + k, static_cast<int>(std::min<long>(kLanes, end - k)));
      }
#else
      for (long k = begin; k < end; ++k) dst[k * batch + b] = src[b * ld_src + k];
#endif
    }
  }

  static void product(const float* a, long batch, const float* panel, long depth, float* c, long ldc) {
    rows_times_panel(a, batch, static_cast<int>(batch), panel, static_cast<int>(depth), c, ldc);
  }
};

#if defined(__AVX512BF16__)
// src[0, n) (n <= 32, even) rounded to bf16 (to nearest even, as XLA converts) as n / 2 pairs, one 32-bit word
// each, low half the even element.
inline __m512i bf16_pairs(const float* src, int n) {
  const __m512 low = reinterpret_cast<__m512>(load_n(src, std::min(n, kLanes)));
  const __m512 high = reinterpret_cast<__m512>(n > kLanes ? load_n(src + kLanes, n - kLanes) : (v16){});
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(high, low));
}

// dst[i·stride] = pair i of src[0, n) for i < n / 2: a row written down a column of pairs.
inline void scatter_pair_column(uint32_t* dst, long stride, const float* src, int n) {
  _mm512_mask_i32scatter_epi32(dst, static_cast<__mmask16>((1u << (n / 2)) - 1), column_offsets(stride),
                               bf16_pairs(src, n), 4);
}

// C[r, 0:16] = sum over pairs k of A[r, 2k] Bp[2k, :] + A[r, 2k+1] Bp[2k+1, :] for r < ROWS: A's pairs k-major
// (a[k·ldk + r], one 32-bit word per pair), Bp a panel of pairs (pairs x 16 x 2 bf16, aligned).
template <int ROWS>
void panel_product_bf16(const uint32_t* a, long ldk, const uint32_t* bp, int pairs, float* c, long ldc) {
  __m512 acc[ROWS];
#pragma GCC unroll 32
  for (int r = 0; r < ROWS; ++r) acc[r] = _mm512_setzero_ps();
  for (int k = 0; k < pairs; ++k) {
    const __m512bh w = reinterpret_cast<__m512bh>(_mm512_load_si512(bp + static_cast<long>(k) * kLanes));
    const uint32_t* a_k = a + k * ldk;
#pragma GCC unroll 32
    for (int r = 0; r < ROWS; ++r) {
      acc[r] = _mm512_dpbf16_ps(acc[r], reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a_k[r]))), w);
    }
  }
#pragma GCC unroll 32
  for (int r = 0; r < ROWS; ++r) _mm512_storeu_ps(c + r * ldc, acc[r]);
}

using PanelBf16Fn = void (*)(const uint32_t*, long, const uint32_t*, int, float*, long);
const auto kPanelBf16Table = make_rows_table(
    [](auto rows) -> PanelBf16Fn { return &panel_product_bf16<rows()>; }, std::make_integer_sequence<int, kMaxRows>{});

// The bf16 format: the F32Operands layouts with k (or n) in pairs, pair k / 2 holding elements k and k + 1 in one
// 32-bit word: panels packed[.][k / 2][16], copies copy[(k / 2)·batch + b]. H is even (see `with_operands`).
struct Bf16Operands {
  using Elem = uint16_t;

  static void pack_gate_panels(const float* W, int gates, long hidden, long panels, long first, long last,
                               uint16_t* packed) {
    for_each_panel_row(W, gates, hidden, panels, first, last, [&](long offset, int c, long unit, const float* row) {
      auto* panel = reinterpret_cast<uint32_t*>(packed + offset);
      if (unit >= hidden) {
        for (long pair = 0; pair < hidden / 2; ++pair) panel[pair * kLanes + c] = 0;
        return;
      }
      for (long k = 0; k < hidden; k += 2 * kLanes) {
        scatter_pair_column(panel + (k / 2) * kLanes + c, kLanes, row + k,
                            static_cast<int>(std::min<long>(2 * kLanes, hidden - k)));
      }
    });
  }

  static void pack_column_panels(const float* W, long rows, long hidden, long first, long last, uint16_t* packed) {
    // [a_0 .. a_15 | b_0 .. b_15] (rows n and n + 1) into [a_0, b_0, a_1, b_1, ...]
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                                                22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (long p = first; p < last; ++p) {
      const int n_units = static_cast<int>(std::min<long>(kLanes, hidden - p * kLanes));
      for (long n = 0; n < rows; n += 2) {
        const __m512 a = reinterpret_cast<__m512>(load_n(W + n * hidden + p * kLanes, n_units));
        const __m512 b = reinterpret_cast<__m512>(load_n(W + (n + 1) * hidden + p * kLanes, n_units));
        const __m512i pairs = _mm512_permutexvar_epi16(interleave, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(b, a)));
        _mm512_store_si512(packed + (p * rows + n) * kLanes, pairs);
      }
    }
  }

  static void to_k_major(uint16_t* dst, const float* src, long ld_src, long batch, long begin, long end) {
    auto* pairs = reinterpret_cast<uint32_t*>(dst);
    for (long b = 0; b < batch; ++b) {
      for (long k = begin; k < end; k += 2 * kLanes) {
        scatter_pair_column(pairs + (k / 2) * batch + b, batch, src + b * ld_src + k,
                            static_cast<int>(std::min<long>(2 * kLanes, end - k)));
      }
    }
  }

  static void product(const uint16_t* a, long batch, const uint16_t* panel, long depth, float* c, long ldc) {
    const auto* pairs = reinterpret_cast<const uint32_t*>(a);
    const auto* bp = reinterpret_cast<const uint32_t*>(panel);
    for_row_blocks(static_cast<int>(batch), [&](int start, int size) {
      kPanelBf16Table[size - 1](pairs + start, batch, bp, static_cast<int>(depth / 2), c + start * ldc, ldc);
    });
  }
};
#endif

}  // namespace
