// The output layer's native kernels: softmax cross-entropy rows, and the output layer's training forward and
// backward passes over the loss gradient in row panels. Built with recurrent.cc into one shared library
// (rnn_jax/kernels/_build.py); the shared vector math and thread-pool work are in simd.h.

#include "simd.h"

namespace {

// ------------------------------------------------------------------------------------------ softmax cross-entropy
// The output layer's loss, per row n of the logits z = X + c (X the product h V^T, (N, K); c the bias, (K,)):
//   forward:          lse_n = log Σ_k exp(z_nk);  nll_n = lse_n - z_n,t_n              outputs lse, nll (N,)
//   value and grad:   nll_n and dz_nk = exp(z_nk - lse_n) - [k = t_n]                  outputs nll (N,), dz (N, K)
// XLA runs these as about eight passes over the (N, K) logits (bias add, max, exp, sum, scale, scatter of the
// label, and in the backward pass the same again); here each is one pass per row while the row is in cache. A
// target outside [0, K) gives a NaN loss and NaN gradient row.

inline v16 load_or(const float* p, int n, float fill) {
  if (n == kLanes) return *reinterpret_cast<const v16u*>(p);
  v16 v = (v16){} + fill;
#if defined(__AVX512F__)
  return reinterpret_cast<v16>(
      _mm512_mask_loadu_ps(reinterpret_cast<__m512>(v), static_cast<__mmask16>((1u << n) - 1), p));
#else
  std::memcpy(&v, p, sizeof(float) * n);
  return v;
#endif
}

// exp(x), exactly 0 below float32's smallest normal result (exp_v clamps there instead) and for x = -inf.
inline v16 exp_or_zero(v16 x) {
  v16 zero = {};
  return x < -87.0f ? zero : exp_v(x);
}

inline float horizontal_max(v16 v) {
  float m = v[0];
  for (int i = 1; i < kLanes; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

inline float horizontal_sum(v16 v) {
  float s = 0.0f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// Rows per chunk: enough chunks to balance threads, each big enough to amortise claiming it.
inline long row_chunk_count(long rows) { return std::max<long>(1, std::min<long>(rows, 16)); }

// Both kernels: per row, the max, then exp(z - max) summed (and, with `D`, stored), then lse and nll (and, with
// `D`, the stored row scaled to softmax and the target's entry lowered by 1). `L` (lse) and `D` may be null. D may
// alias X: each element is read before its own slot is written, and z_{n,t_n} before the row is overwritten.
ffi::Error xent_rows(ffi::ThreadPool& pool, const ffi::Buffer<ffi::F32, 2>& logits, const ffi::Buffer<ffi::F32, 1>& bias,
                     const ffi::Buffer<ffi::S32, 1>& targets, float* L, float* Y, float* D) {
  const long rows = logits.dimensions()[0], classes = logits.dimensions()[1];
  if (bias.dimensions()[0] != classes || targets.dimensions()[0] != rows) {
    return ffi::Error::InvalidArgument("softmax cross-entropy kernel: expected logits (N, K), bias (K,), targets (N,) "
                                       "with N=" + std::to_string(rows) + ", K=" + std::to_string(classes) +
                                       "; got bias (" + std::to_string(bias.dimensions()[0]) + ",), targets (" +
                                       std::to_string(targets.dimensions()[0]) + ",)");
  }
  if (rows == 0) return ffi::Error::Success();
  const float* X = logits.typed_data();
  const float* c = bias.typed_data();
  const int32_t* t = targets.typed_data();
  const long chunks = row_chunk_count(rows);
  const float inf = __builtin_inff();
  const std::function<void(long, long)> work = [&](long, long chunk) {
    for (long n = rows * chunk / chunks; n < rows * (chunk + 1) / chunks; ++n) {
      const float* x = X + n * classes;
      float* d = D == nullptr ? nullptr : D + n * classes;
      const bool valid = t[n] >= 0 && t[n] < classes;
      const float target_logit = valid ? x[t[n]] + c[t[n]] : __builtin_nanf("");
      v16 m = (v16){} - inf;
      for (long k = 0; k < classes; k += kLanes) {
        const int w = static_cast<int>(std::min<long>(kLanes, classes - k));
        v16 z = load_or(x + k, w, -inf) + load_or(c + k, w, 0.0f);
        m = z > m ? z : m;
      }
      const float row_max = horizontal_max(m);
      v16 sums[2] = {(v16){}, (v16){}};
      for (long k = 0; k < classes; k += kLanes) {
        const int w = static_cast<int>(std::min<long>(kLanes, classes - k));
        v16 e = exp_or_zero(load_or(x + k, w, -inf) + load_or(c + k, w, 0.0f) - row_max);
        sums[(k / kLanes) & 1] += e;
        if (d != nullptr) store_n(d + k, e, w);
      }
      const float sum = horizontal_sum(sums[0] + sums[1]);
      const float log_sum = row_max + std::log(sum);
      if (L != nullptr) L[n] = log_sum;
      Y[n] = log_sum - target_logit;
      if (d == nullptr) continue;
      const float scale = valid ? 1.0f / sum : __builtin_nanf("");
      for (long k = 0; k < classes; k += kLanes) {
        const int w = static_cast<int>(std::min<long>(kLanes, classes - k));
        store_n(d + k, scale * load_n(d + k, w), w);
      }
      if (valid) d[t[n]] -= 1.0f;
    }
  };
  run_phased(pool, helper_count(pool, 8 * rows * classes, chunks), 1, chunks, work);
  return ffi::Error::Success();
}

ffi::Error XentForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 2> logits, ffi::Buffer<ffi::F32, 1> bias,
                           ffi::Buffer<ffi::S32, 1> targets, ffi::ResultBuffer<ffi::F32, 1> lse,
                           ffi::ResultBuffer<ffi::F32, 1> nll) {
  return xent_rows(pool, logits, bias, targets, lse->typed_data(), nll->typed_data(), nullptr);
}

// Value and gradient, for training: nll_n and dz_n = softmax(z_n) - onehot(t_n), the gradient of nll_n for a
// unit cotangent, written over the logits when XLA donates them. The caller scales rows by g_n after the
// products that read dz (a row scale commutes with them), so no backward pass over the (N, K) logits is needed.
ffi::Error XentValueAndGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 2> logits, ffi::Buffer<ffi::F32, 1> bias,
                                ffi::Buffer<ffi::S32, 1> targets, ffi::ResultBuffer<ffi::F32, 1> nll,
                                ffi::ResultBuffer<ffi::F32, 2> d_logits) {
  return xent_rows(pool, logits, bias, targets, nullptr, nll->typed_data(), d_logits->typed_data());
}


// ------------------------------------------------------------------------------------------ output layer backward
// With the loss's gradient D = softmax - onehot (N, K) and a cotangent g (N,) of the losses, the output layer
// z = h V^T + c needs three products over D:  dh = g ⊙ (D V)  (N, H);  dV = D^T (g ⊙ h)  (K, H);  dc = D^T g  (K,).
// XLA runs them as two dots and a matrix-vector product; the first (D V, contracting the long vocabulary axis of
// row-major D) measured ~145-170 GFLOP/s on this 2-core machine against ~200 for the others, and the dots side by
// side slow each other down. Here D is written in a layout both products read at full speed, "row panels": rows in
// groups of 16 (the last group r = N mod 16 rows wide), each group stored class-major, element (n, k) of group
// p = n / 16 at offset 16 p K + k w + n mod 16 (w the group's width). With that layout
//   dh^T = V^T D^T   takes each panel's 16 rows as the micro-kernel's packed operand, V^T k-major as stored;
//   dV   = D^T h'    (h' = g ⊙ h, packed) broadcasts D's entries at fixed offsets 64 r + 4 i from a panel's base,
// and dc rides along as one more column of h' (g itself). Measured standalone at 400 x 10000 x 200: 8.2 + 7.7 ms
// (195 and 209 GFLOP/s) against 20 ms for XLA's three, reading the row-major D. The layout is private to the pair
// `OutputForward` (writes it, section below) and `OutputBackward` (reads it).
constexpr long kPanelRows = 16;

inline long panel_width(long rows, long panel) { return std::min(kPanelRows, rows - panel * kPanelRows); }

// Transposes the 16 x 16 block held as 16 rows in `v` (row i, lane j -> row j, lane i).
inline void transpose16(v16* v) {
#if defined(__AVX512F__)
  __m512 a[16], b[16];
  for (int i = 0; i < 16; i += 2) {
    a[i] = _mm512_unpacklo_ps(reinterpret_cast<__m512>(v[i]), reinterpret_cast<__m512>(v[i + 1]));
    a[i + 1] = _mm512_unpackhi_ps(reinterpret_cast<__m512>(v[i]), reinterpret_cast<__m512>(v[i + 1]));
  }
  for (int i = 0; i < 16; i += 4) {
    for (int j = 0; j < 2; ++j) {
      __m512d x = _mm512_castps_pd(a[i + j]), y = _mm512_castps_pd(a[i + j + 2]);
      b[i + 2 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(x, y));
      b[i + 2 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(x, y));
    }
  }
  // b[4q + s] holds, per 128-bit lane L, elements (rows 4q..4q+3, column 4L + s); gather the lanes across q.
  for (int s = 0; s < 4; ++s) {
    __m512 lo01 = _mm512_shuffle_f32x4(b[s], b[4 + s], 0x44);
    __m512 hi01 = _mm512_shuffle_f32x4(b[s], b[4 + s], 0xee);
    __m512 lo23 = _mm512_shuffle_f32x4(b[8 + s], b[12 + s], 0x44);
    __m512 hi23 = _mm512_shuffle_f32x4(b[8 + s], b[12 + s], 0xee);
    v[s] = reinterpret_cast<v16>(_mm512_shuffle_f32x4(lo01, lo23, 0x88));
    v[4 + s] = reinterpret_cast<v16>(_mm512_shuffle_f32x4(lo01, lo23, 0xdd));
    v[8 + s] = reinterpret_cast<v16>(_mm512_shuffle_f32x4(hi01, hi23, 0x88));
    v[12 + s] = reinterpret_cast<v16>(_mm512_shuffle_f32x4(hi01, hi23, 0xdd));
  }
#else
  for (int i = 0; i < 16; ++i) {
    for (int j = i + 1; j < 16; ++j) std::swap(v[i][j], v[j][i]);
  }
#endif
}

// A per-thread scratch area of at least `floats` floats, 64-byte aligned, kept between calls.
float* thread_scratch(size_t floats) {
  thread_local std::unique_ptr<AlignedBuffer> buffer;
  thread_local size_t capacity = 0;
  if (capacity < floats) {
    buffer = std::make_unique<AlignedBuffer>(floats);
    capacity = floats;
  }
  return buffer->data;
}

// C[r, 0:16] (+)= Σ_n D[n, m0 + r] B[n, 0:16] for r < ROWS, D in full row panels: panel p's entry
// (n = 16 p + i, m) at a + p·ldp + 16 m + i (a already offset to m0), then, if `last` is not null, one more panel
// there (same layout). B packed, 16 rows per panel (bp + 256 p + 16 i).
template <int ROWS, bool ACCUMULATE>
void panel_rows_product(const float* a, long ldp, long panels, const float* last, const float* bp, float* c,
                        long ldc) {
  v16 acc[ROWS];
#pragma GCC unroll 32
  for (int r = 0; r < ROWS; ++r) acc[r] = ACCUMULATE ? *reinterpret_cast<const v16u*>(c + r * ldc) : (v16){};
  for (long p = 0; p <= panels; ++p) {
    const float* ap = p < panels ? a + p * ldp : last;
    if (ap == nullptr) break;
    const float* bpp = bp + p * kPanelRows * kLanes;
    for (int i = 0; i < kPanelRows; ++i) {
      v16 w = *reinterpret_cast<const v16*>(bpp + i * kLanes);
#pragma GCC unroll 32
      for (int r = 0; r < ROWS; ++r) acc[r] += ap[r * kPanelRows + i] * w;
    }
  }
#pragma GCC unroll 32
  for (int r = 0; r < ROWS; ++r) *reinterpret_cast<v16u*>(c + r * ldc) = acc[r];
}

using PanelRowsFn = void (*)(const float*, long, long, const float*, const float*, float*, long);

const auto kPanelAddTable = make_rows_table([](auto rows) -> PanelFn { return &panel_product<rows(), true>; },
                                            std::make_integer_sequence<int, kMaxRows>{});
const auto kPanelRowsSet = make_rows_table([](auto rows) -> PanelRowsFn { return &panel_rows_product<rows(), false>; },
                                            std::make_integer_sequence<int, kMaxRows>{});
const auto kPanelRowsAdd = make_rows_table([](auto rows) -> PanelRowsFn { return &panel_rows_product<rows(), true>; },
                                            std::make_integer_sequence<int, kMaxRows>{});

// Depth of one block of dh's product: V's block (depth x H) stays in L2 while every panel of the chunk reads it.
constexpr long kDepthBlock = 512;
// Vocabulary rows per dV chunk (at most), and row panels per depth block of its product (the block's 24 x 512
// entries of D and 512 x H of h' stay in L2 while every column panel reads them).
constexpr long kVocabChunk = 240;
constexpr long kPanelBlock = 32;

// dh (N, H), dV (K, H), dc (K,) from D in row panels (N, K), the rows h (N, H), the cotangent g (N,) and V (K, H).
// Phase 0 packs h' = [g ⊙ h, g] into 16-column panels of 16-row blocks (and copies a partial last row panel into a
// full-width one, zero-padded); phase 1 runs, as one pool of chunks, dV's vocabulary blocks and dh's row-panel
// ranges (two per thread, each reading V once, block by block, then writing its rows of dh scaled by g).
ffi::Error OutputBackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 2> d_panels, ffi::Buffer<ffi::F32, 2> h,
                              ffi::Buffer<ffi::F32, 1> g, ffi::Buffer<ffi::F32, 2> weights,
                              ffi::ResultBuffer<ffi::F32, 2> d_h, ffi::ResultBuffer<ffi::F32, 2> d_weights,
                              ffi::ResultBuffer<ffi::F32, 1> d_bias) {
  const long rows = d_panels.dimensions()[0], classes = d_panels.dimensions()[1], hidden = h.dimensions()[1];
  if (h.dimensions()[0] != rows || g.dimensions()[0] != rows || weights.dimensions()[0] != classes ||
      weights.dimensions()[1] != hidden) {
    return ffi::Error::InvalidArgument(
        "output-layer backward kernel: expected D (N, K), h (N, H), g (N,), V (K, H) with N=" + std::to_string(rows) +
        ", K=" + std::to_string(classes) + ", H=" + std::to_string(hidden) + "; got h (" +
        std::to_string(h.dimensions()[0]) + ", " + std::to_string(hidden) + "), g (" +
        std::to_string(g.dimensions()[0]) + ",), V (" + std::to_string(weights.dimensions()[0]) + ", " +
        std::to_string(weights.dimensions()[1]) + ")");
  }
  float* dh = d_h->typed_data();
  float* dV = d_weights->typed_data();
  float* dc = d_bias->typed_data();
  if (rows == 0 || classes == 0 || hidden == 0) {
    std::fill(dh, dh + rows * hidden, 0.0f);
    std::fill(dV, dV + classes * hidden, 0.0f);
    std::fill(dc, dc + classes, 0.0f);
    return ffi::Error::Success();
  }
  const float* D = d_panels.typed_data();
  const float* H = h.typed_data();
  const float* G = g.typed_data();
  const float* V = weights.typed_data();
  const long panels = (rows + kPanelRows - 1) / kPanelRows, full_panels = rows / kPanelRows;
  const long last_width = rows - full_panels * kPanelRows;
  const long column_panels = hidden / kLanes + 1;  // the last holds H mod 16 columns of g ⊙ h, then g
  const long panel_stride = kPanelRows * classes;
  AlignedBuffer packed(column_panels * panels * kPanelRows * kLanes);
  AlignedBuffer last(last_width > 0 ? classes * kPanelRows : 1);
  AlignedBuffer dh_t(hidden * panels * kPanelRows);  // dh^T before the row scale
  const long ld_t = panels * kPanelRows;

  const long threads = 1 + helper_count(pool, 4 * rows * classes * hidden, panels);
  // dh: two row-panel ranges per thread (each reads all of V); dV: at least eight vocabulary blocks per thread.
  const long dh_chunks = std::min(2 * threads, panels);
  const long vocab_chunk = std::clamp<long>(classes / (8 * threads) / kMaxRows * kMaxRows, kMaxRows, kVocabChunk);
  const long dv_chunks = std::max<long>(1, (classes + vocab_chunk - 1) / vocab_chunk);
  // Each dh chunk followed by its share of dV's chunks, so every thread's home chunks start with a dh range
  // (unclaimed chunks go to whoever is free).
  std::vector<long> chunk_kind;  // >= 0: dV block; < 0: dh chunk -(1 + index)
  for (long t = 0; t < dh_chunks; ++t) {
    chunk_kind.push_back(-(1 + t));
    for (long b = dv_chunks * t / dh_chunks; b < dv_chunks * (t + 1) / dh_chunks; ++b) chunk_kind.push_back(b);
  }
  const float* last_panel = last_width > 0 ? last.data : nullptr;

  auto pack = [&](long panel) {
    const long first = panel * kPanelRows, width = panel_width(rows, panel);
    const long tail = hidden % kLanes;
    for (long cp = 0; cp < column_panels; ++cp) {
      float* dst = packed.data + (cp * panels + panel) * kPanelRows * kLanes;
      const int columns = static_cast<int>(cp + 1 < column_panels ? kLanes : tail);
      for (long i = 0; i < kPanelRows; ++i) {
        v16 value = (v16){};
        if (i < width) {
          value = G[first + i] * load_n(H + (first + i) * hidden + cp * kLanes, columns);
          if (columns < kLanes) value[columns] = G[first + i];
        }
        *reinterpret_cast<v16*>(dst + i * kLanes) = value;
      }
    }
    if (width < kPanelRows) {
      const float* src = D + full_panels * panel_stride;
      for (long m = 0; m < classes; ++m) {
        for (long i = 0; i < kPanelRows; ++i) last.data[m * kPanelRows + i] = i < width ? src[m * width + i] : 0.0f;
      }
    }
  };

  auto vocab_block = [&](long block) {
    const long begin = classes * block / dv_chunks, end = classes * (block + 1) / dv_chunks;
    const long count = end - begin, row_blocks = (count + kMaxRows - 1) / kMaxRows;
    const long depth_blocks = (panels + kPanelBlock - 1) / kPanelBlock;
    const long tail = hidden % kLanes, first_col = (column_panels - 1) * kLanes;
    alignas(64) float tile[kMaxRows * kLanes];
    for (long start = begin, b = 0; b < row_blocks; ++b) {
      const int size = static_cast<int>((end - start) / (row_blocks - b));
      for (long d = 0; d < depth_blocks; ++d) {
        const long p0 = d * kPanelBlock, p1 = std::min(panels, p0 + kPanelBlock);
        const long full = std::min(p1, full_panels) - p0;
        const float* a = D + p0 * panel_stride + start * kPanelRows;
        const float* a_last = p1 == panels && last_panel != nullptr ? last_panel + start * kPanelRows : nullptr;
        const PanelRowsFn product = (d == 0 ? kPanelRowsSet : kPanelRowsAdd)[size - 1];
        for (long cp = 0; cp < column_panels; ++cp) {
          const float* bp = packed.data + (cp * panels + p0) * kPanelRows * kLanes;
          const bool partial = cp + 1 == column_panels;
          product(a, panel_stride, full, a_last, bp, partial ? tile : dV + start * hidden + cp * kLanes,
                  partial ? kLanes : hidden);
        }
      }
      for (int r = 0; r < size; ++r) {
        for (long j = 0; j < tail; ++j) dV[(start + r) * hidden + first_col + j] = tile[r * kLanes + j];
        dc[start + r] = tile[r * kLanes + tail];
      }
      start += size;
    }
  };

  auto dh_range = [&](long index) {
    const long p_begin = panels * index / dh_chunks, p_end = panels * (index + 1) / dh_chunks;
    const long row_blocks = (hidden + kMaxRows - 1) / kMaxRows;
    for (long k0 = 0; k0 < classes; k0 += kDepthBlock) {
      const int depth = static_cast<int>(std::min(kDepthBlock, classes - k0));
      for (long p = p_begin; p < p_end; ++p) {
        const float* bp = (p < full_panels ? D + p * panel_stride : last.data) + k0 * kPanelRows;
        for (long start = 0, b = 0; b < row_blocks; ++b) {
          const int size = static_cast<int>((hidden - start) / (row_blocks - b));
          (k0 > 0 ? kPanelAddTable : kPanelTable)[size - 1](V + k0 * hidden + start, hidden, bp, depth,
                                                             dh_t.data + start * ld_t + p * kPanelRows, ld_t);
          start += size;
        }
      }
    }
    for (long p = p_begin; p < p_end; ++p) {  // dh rows = dh^T columns, transposed 16 x 16 and scaled by g
      const long first = p * kPanelRows, width = panel_width(rows, p);
      long j = 0;
      if (width == kPanelRows) {
        for (; j + kLanes <= hidden; j += kLanes) {
          v16 block[kLanes];
          for (int q = 0; q < kLanes; ++q) block[q] = *reinterpret_cast<const v16*>(dh_t.data + (j + q) * ld_t + first);
          transpose16(block);
          for (int i = 0; i < kPanelRows; ++i) {
            *reinterpret_cast<v16u*>(dh + (first + i) * hidden + j) = G[first + i] * block[i];
          }
        }
      }
      for (long i = 0; i < width; ++i) {
        for (long jj = j; jj < hidden; ++jj) {
          dh[(first + i) * hidden + jj] = G[first + i] * dh_t.data[jj * ld_t + first + i];
        }
      }
    }
  };

  // The two phases have different chunk counts, so each is a run of its own.
  run_phased(pool, static_cast<int>(threads - 1), 1, panels, [&](long, long panel) { pack(panel); });
  run_phased(pool, static_cast<int>(threads - 1), 1, static_cast<long>(chunk_kind.size()), [&](long, long chunk) {
    if (chunk_kind[chunk] < 0) {
      dh_range(-chunk_kind[chunk] - 1);
    } else {
      vocab_block(chunk_kind[chunk]);
    }
  });
  return ffi::Error::Success();
}


// ------------------------------------------------------------------------------------------ output layer forward
// The logits z = h V^T + c and the loss's value and gradient, written straight into row panels: the product's
// micro-kernel computes 24 classes x 16 rows per tile, one 16-row panel's layout, so the logits never exist
// row-major. Per panel the softmax then works across its 16 rows at once (one row per lane: no horizontal
// reductions, no transposes). Phase 0 packs each panel's h^T (H x 16); phase 1, per block of 24 classes, packs
// V's rows k-major and multiplies them by every panel, bias added, keeping each panel's running max; phase 2, per
// panel, exp(z - max) and its sum, the loss, then the gradient exp(z - lse) - onehot in place.

// C[r, 0:16] = bias[r] + Σ_k A[r, k] B[k, 0:16] for r < ROWS (A k-major with stride ROWS, B packed); returns
// max_r C[r, 0:16]. `panel_product` with the bias and the running max in registers and the stride known: writing
// the bias into the tile first and reading it back for the max measured ~10% slower at zaremba_small.
template <int ROWS>
v16 biased_panel_product(const float* a, const float* bp, int depth, const float* bias, float* c) {
  v16 acc[ROWS];
#pragma GCC unroll 32
  for (int r = 0; r < ROWS; ++r) acc[r] = (v16){} + bias[r];
  for (int k = 0; k < depth; ++k) {
    v16 w = *reinterpret_cast<const v16*>(bp + static_cast<long>(k) * kLanes);
    const float* a_k = a + k * ROWS;
#pragma GCC unroll 32
    for (int r = 0; r < ROWS; ++r) acc[r] += a_k[r] * w;
  }
  v16 top = acc[0];
#pragma GCC unroll 32
  for (int r = 0; r < ROWS; ++r) {
    *reinterpret_cast<v16*>(c + r * kLanes) = acc[r];
    top = acc[r] > top ? acc[r] : top;
  }
  return top;
}

// dst[k·ldk + r] = src[r·ld + k] for r < rows, k < depth, and 0 for rows <= r < ldk: rows made k-major, 16 x 16
// at a time (element by element, packing V's 24-class blocks took ~1.3 of the 9 ms forward at zaremba_small).
void pack_k_major(const float* src, long ld, int rows, long depth, float* dst, int ldk) {
  for (int r0 = 0; r0 < ldk; r0 += kLanes) {
    const int loaded = std::clamp(rows - r0, 0, kLanes), stored = std::min(kLanes, ldk - r0);
    for (long k0 = 0; k0 < depth; k0 += kLanes) {
      const int width = static_cast<int>(std::min<long>(kLanes, depth - k0));
      v16 block[kLanes];
      for (int i = 0; i < kLanes; ++i) block[i] = i < loaded ? load_n(src + (r0 + i) * ld + k0, width) : (v16){};
      transpose16(block);
      for (int j = 0; j < width; ++j) store_n(dst + (k0 + j) * ldk + r0, block[j], stored);
    }
  }
}

using BiasedFn = v16 (*)(const float*, const float*, int, const float*, float*);
const auto kBiasedTable = make_rows_table([](auto rows) -> BiasedFn { return &biased_panel_product<rows()>; },
                                          std::make_integer_sequence<int, kMaxRows>{});

ffi::Error OutputForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 2> h, ffi::Buffer<ffi::F32, 2> weights,
                             ffi::Buffer<ffi::F32, 1> bias, ffi::Buffer<ffi::S32, 1> targets,
                             ffi::ResultBuffer<ffi::F32, 1> nll, ffi::ResultBuffer<ffi::F32, 2> d_panels) {
  const long rows = h.dimensions()[0], hidden = h.dimensions()[1], classes = weights.dimensions()[0];
  if (weights.dimensions()[1] != hidden || bias.dimensions()[0] != classes || targets.dimensions()[0] != rows) {
    return ffi::Error::InvalidArgument(
        "output-layer forward kernel: expected h (N, H), V (K, H), c (K,), targets (N,) with N=" +
        std::to_string(rows) + ", H=" + std::to_string(hidden) + ", K=" + std::to_string(classes) + "; got V (" +
        std::to_string(classes) + ", " + std::to_string(weights.dimensions()[1]) + "), c (" +
        std::to_string(bias.dimensions()[0]) + ",), targets (" + std::to_string(targets.dimensions()[0]) + ",)");
  }
  float* Y = nll->typed_data();
  if (rows == 0 || classes == 0) {
    std::fill(Y, Y + rows, classes == 0 ? __builtin_nanf("") : 0.0f);
    return ffi::Error::Success();
  }
  const float* Hs = h.typed_data();
  const float* V = weights.typed_data();
  const float* c = bias.typed_data();
  const int32_t* t = targets.typed_data();
  float* D = d_panels->typed_data();
  const long panels = (rows + kPanelRows - 1) / kPanelRows, full_panels = rows / kPanelRows;
  const long last_width = rows - full_panels * kPanelRows;
  const long threads = 1 + helper_count(pool, 2 * rows * classes * hidden, (classes + kMaxRows - 1) / kMaxRows);
  const long class_blocks = (classes + kMaxRows - 1) / kMaxRows;
  const long chunks = std::min(class_blocks, 8 * threads);
  AlignedBuffer packed(panels * std::max<long>(hidden, 1) * kLanes);
  AlignedBuffer last(last_width > 0 ? classes * kPanelRows : 1);
  std::vector<v16> maxima(chunks * panels);
  const float inf = __builtin_inff();
  auto panel_data = [&](long p) { return p < full_panels ? D + p * kPanelRows * classes : last.data; };

  auto pack = [&](long p) {
    pack_k_major(Hs + p * kPanelRows * hidden, hidden, static_cast<int>(panel_width(rows, p)), hidden,
                 packed.data + p * hidden * kLanes, kLanes);
  };
  auto products = [&](long chunk) {
    float* a = thread_scratch(kMaxRows * std::max<long>(hidden, 1));
    const long b_begin = class_blocks * chunk / chunks, b_end = class_blocks * (chunk + 1) / chunks;
    v16* top = maxima.data() + chunk * panels;
    for (long p = 0; p < panels; ++p) top[p] = (v16){} - inf;
    for (long b = b_begin; b < b_end; ++b) {
      const long m = b * kMaxRows;
      const int size = static_cast<int>(std::min<long>(kMaxRows, classes - m));
      pack_k_major(V + m * hidden, hidden, size, hidden, a, size);
      for (long p = 0; p < panels; ++p) {
        v16 tile_max = kBiasedTable[size - 1](a, packed.data + p * hidden * kLanes, static_cast<int>(hidden), c + m,
                                              panel_data(p) + m * kLanes);
        top[p] = tile_max > top[p] ? tile_max : top[p];
      }
    }
  };
  auto softmax = [&](long p) {
    const long first = p * kPanelRows, width = panel_width(rows, p);
    float* z = panel_data(p);
    v16 row_max = (v16){} - inf;
    for (long chunk = 0; chunk < chunks; ++chunk) {
      const v16 m = maxima[chunk * panels + p];
      row_max = m > row_max ? m : row_max;
    }
    float target_logit[kPanelRows];
    for (long i = 0; i < width; ++i) {
      const bool valid = t[first + i] >= 0 && t[first + i] < classes;
      target_logit[i] = valid ? z[t[first + i] * kLanes + i] : __builtin_nanf("");
    }
    v16 sums[2] = {(v16){}, (v16){}};
    for (long m = 0; m < classes; ++m) {
      v16* zm = reinterpret_cast<v16*>(z + m * kLanes);
      const v16 e = exp_or_zero(*zm - row_max);
      sums[m & 1] += e;
      *zm = e;
    }
    const v16 sum = sums[0] + sums[1];
    v16 scale;
    for (long i = 0; i < kLanes; ++i) {
      const bool valid = i < width && t[first + i] >= 0 && t[first + i] < classes;
      if (i < width) Y[first + i] = row_max[i] + std::log(sum[i]) - target_logit[i];
      scale[i] = valid ? 1.0f / sum[i] : (i < width ? __builtin_nanf("") : 0.0f);
    }
    for (long m = 0; m < classes; ++m) *reinterpret_cast<v16*>(z + m * kLanes) *= scale;
    for (long i = 0; i < width; ++i) {
      if (t[first + i] >= 0 && t[first + i] < classes) z[t[first + i] * kLanes + i] -= 1.0f;
    }
    if (width < kPanelRows) {  // the partial last panel, from its full-width copy into its own layout
      float* out = D + full_panels * kPanelRows * classes;
      for (long m = 0; m < classes; ++m) {
        for (long i = 0; i < width; ++i) out[m * width + i] = z[m * kLanes + i];
      }
    }
  };
  run_phased(pool, static_cast<int>(threads - 1), 1, panels, [&](long, long p) { pack(p); });
  run_phased(pool, static_cast<int>(threads - 1), 1, chunks, [&](long, long chunk) { products(chunk); });
  run_phased(pool, static_cast<int>(threads - 1), 1, panels, [&](long, long p) { softmax(p); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnJaxXentForward, XentForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array2>()
                                  .Arg<Array1>()
                                  .Arg<Labels>()
                                  .Ret<Array1>()
                                  .Ret<Array1>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnJaxXentValueAndGrad, XentValueAndGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array2>()
                                  .Arg<Array1>()
                                  .Arg<Labels>()
                                  .Ret<Array1>()
                                  .Ret<Array2>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnJaxOutputBackward, OutputBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array2>()
                                  .Arg<Array2>()
                                  .Arg<Array1>()
                                  .Arg<Array2>()
                                  .Ret<Array2>()
                                  .Ret<Array2>()
                                  .Ret<Array1>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnJaxOutputForward, OutputForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array2>()
                                  .Arg<Array2>()
                                  .Arg<Array1>()
                                  .Arg<Labels>()
                                  .Ret<Array1>()
                                  .Ret<Array2>());
