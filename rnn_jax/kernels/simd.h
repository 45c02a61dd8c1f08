// Shared pieces of the native kernels (recurrent.cc, xent.cc): 16-lane float vectors and their elementwise math,
// the packed-panel matrix product micro-kernels, and phased work over XLA's intra-op thread pool.
// Everything sits in an anonymous namespace: each source file gets its own copy, and one shared library
// holds both (compiled together by rnn_jax/kernels/_build.py with -march=native).
#pragma once

#include <algorithm>
#include <cmath>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <immintrin.h>
#include <functional>
#include <memory>
#include <sched.h>
#include <string>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef int32_t i16v __attribute__((vector_size(64)));
constexpr int kLanes = 16;
// Accumulators held in registers by one micro-kernel call: a 16-lane vector is one of AVX-512's 32 registers but
// two of AVX2's 16, where more rows would spill the accumulators to memory.
#if defined(__AVX512F__)
constexpr int kMaxRows = 24;
#else
constexpr int kMaxRows = 6;
#endif

// ------------------------------------------------------------------------------------------ elementwise math
// NaN-preserving clamps (a comparison with NaN is false, so NaN passes through and propagates).
inline v16 clamp(v16 x, float lo, float hi) {
  v16 vlo = (v16){} + lo, vhi = (v16){} + hi;  // broadcasts: x - x + lo would be NaN for x = ±inf
  x = x < vlo ? vlo : x;
  return x > vhi ? vhi : x;
}

// exp(x), |relative error| < 2 ulp on [-87, 87]: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite), e^r by a
// degree-6 polynomial, then scaled by 2^n (AVX-512 rounds and scales with one instruction each).
inline v16 times_pow2(v16 v, v16 n) {
#if defined(__AVX512F__)
  return reinterpret_cast<v16>(_mm512_scalef_ps(reinterpret_cast<__m512>(v), reinterpret_cast<__m512>(n)));
#else
  i16v bits = (__builtin_convertvector(n, i16v) + 127) << 23;
  v16 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return v * scale;
#endif
}

inline v16 exp_v(v16 x) {
  x = clamp(x, -87.0f, 87.0f);
  v16 t = x * 1.44269504088896341f;
#if defined(__AVX512F__)
  v16 n = reinterpret_cast<v16>(_mm512_roundscale_ps(reinterpret_cast<__m512>(t),
                                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
  v16 half = t - t + 0.5f;
  v16 n = __builtin_convertvector(__builtin_convertvector(t + (t < 0 ? -half : half), i16v), v16);
#endif
  v16 r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v16 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return times_pow2(p * r * r + r + 1.0f, n);
}

// 1/x: the hardware's 14-bit estimate refined by one Newton step (~1 ulp; a division is several times slower).
inline v16 reciprocal_v(v16 x) {
#if defined(__AVX512F__)
  v16 r = reinterpret_cast<v16>(_mm512_rcp14_ps(reinterpret_cast<__m512>(x)));
  return r * (2.0f - x * r);
#else
  return 1.0f / x;
#endif
}

inline v16 sigmoid_v(v16 x) { return reciprocal_v(1.0f + exp_v(-x)); }

// tanh: odd Taylor polynomial for |x| < 0.25 (no cancellation), 1 - 2 / (e^{2x} + 1) elsewhere; the two are
// computed side by side, which keeps the latency of one exponential.
inline v16 tanh_v(v16 x) {
  v16 x2 = x * x;
  v16 small = x * (1.0f + x2 * (-3.33333333e-1f + x2 * (1.33333333e-1f + x2 * (-5.39682540e-2f +
                   x2 * (2.18694885e-2f + x2 * (-8.86323552e-3f + x2 * 3.59212803e-3f))))));
  v16 large = 1.0f - 2.0f * reciprocal_v(exp_v(2.0f * x) + 1.0f);
  v16 magnitude = x < 0 ? -x : x;
  return magnitude < 0.25f ? small : large;
}

inline v16 load_n(const float* p, int n) {
  if (n == kLanes) return *reinterpret_cast<const v16u*>(p);
#if defined(__AVX512F__)
  return reinterpret_cast<v16>(_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p));
#else
  v16 v = {};
  std::memcpy(&v, p, sizeof(float) * n);
  return v;
#endif
}

inline void store_n(float* p, v16 v, int n) {
  if (n == kLanes) {
    *reinterpret_cast<v16u*>(p) = v;
  } else {
#if defined(__AVX512F__)
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), reinterpret_cast<__m512>(v));
#else
    std::memcpy(p, &v, sizeof(float) * n);
#endif
  }
}

// Starts loading floats [0, n) of p into cache (for_write: lines about to be overwritten). Issued before a chunk's
// matrix product, so the step's inputs and outputs arrive from memory while it computes.
inline void prefetch_span(const float* p, long n, bool for_write) {
  for (long i = 0; i < n; i += kLanes) {
    if (for_write) {
      __builtin_prefetch(p + i, 1, 3);
    } else {
      __builtin_prefetch(p + i, 0, 3);
    }
  }
}

// ------------------------------------------------------------------------------------------ matrix product
// C[r, 0:16] (+)= sum_k A[r, k] * Bp[k, 0:16] for r < ROWS; A is stored k-major (a[k·ldk + r]), Bp is a packed
// 16-column panel (K x 16, aligned); ACCUMULATE adds to C (a product whose depth comes in blocks). k-major, each
// k's ROWS broadcasts come from one contiguous run instead of ROWS rows read side by side: measured 115 vs 88-92
// GFLOP/s on one core (20 rows at K=650 and 2600, 16 at 256).
#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
// AVX2: each row's 16 columns in two 8-lane registers, written out because the compiler's lowering of the
// 16-lane vector type spills them.
template <int ROWS, bool ACCUMULATE = false>
void panel_product(const float* a, long ldk, const float* bp, int depth, float* c, long ldc) {
  __m256 lo[ROWS], hi[ROWS];
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
    lo[r] = ACCUMULATE ? _mm256_loadu_ps(c + r * ldc) : _mm256_setzero_ps();
    hi[r] = ACCUMULATE ? _mm256_loadu_ps(c + r * ldc + 8) : _mm256_setzero_ps();
  }
  for (int k = 0; k < depth; ++k) {
    const __m256 w_lo = _mm256_load_ps(bp + static_cast<long>(k) * kLanes);
    const __m256 w_hi = _mm256_load_ps(bp + static_cast<long>(k) * kLanes + 8);
    const float* a_k = a + k * ldk;
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
      const __m256 x = _mm256_broadcast_ss(a_k + r);
      lo[r] = _mm256_fmadd_ps(x, w_lo, lo[r]);
      hi[r] = _mm256_fmadd_ps(x, w_hi, hi[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
    _mm256_storeu_ps(c + r * ldc, lo[r]);
    _mm256_storeu_ps(c + r * ldc + 8, hi[r]);
  }
}
#else
template <int ROWS, bool ACCUMULATE = false>
void panel_product(const float* a, long ldk, const float* bp, int depth, float* c, long ldc) {
  v16 acc[ROWS];
#pragma GCC unroll 32
  for (int r = 0; r < ROWS; ++r) acc[r] = ACCUMULATE ? *reinterpret_cast<const v16u*>(c + r * ldc) : (v16){};
  for (int k = 0; k < depth; ++k) {
    v16 w = *reinterpret_cast<const v16*>(bp + static_cast<long>(k) * kLanes);
    const float* a_k = a + k * ldk;
#pragma GCC unroll 32
    for (int r = 0; r < ROWS; ++r) acc[r] += a_k[r] * w;
  }
#pragma GCC unroll 32
  for (int r = 0; r < ROWS; ++r) *reinterpret_cast<v16u*>(c + r * ldc) = acc[r];
}
#endif

using PanelFn = void (*)(const float*, long, const float*, int, float*, long);

// {kernel<1>, ..., kernel<kMaxRows>} for a micro-kernel family, `pick(std::integral_constant<int, ROWS>)` naming
// the instance for ROWS: calls dispatch on a block's row count at run time.
template <typename Pick, int... R>
constexpr auto make_rows_table(Pick pick, std::integer_sequence<int, R...>) {
  return std::array{pick(std::integral_constant<int, R + 1>{})...};
}
const auto kPanelTable = make_rows_table([](auto rows) -> PanelFn { return &panel_product<rows()>; },
                                         std::make_integer_sequence<int, kMaxRows>{});

// block(start, size) for rows [0, rows) in near-equal blocks of at most kMaxRows rows: one micro-kernel call each.
template <typename Block>
inline void for_row_blocks(int rows, Block&& block) {
  const int blocks = (rows + kMaxRows - 1) / kMaxRows;
  for (int start = 0, b = 0; b < blocks; ++b) {
    const int size = (rows - start) / (blocks - b);
    block(start, size);
    start += size;
  }
}

// All rows of A (rows x depth, k-major with stride ldk) times one packed panel, in blocks of at most kMaxRows rows.
void rows_times_panel(const float* a, long ldk, int rows, const float* bp, int depth, float* c, long ldc) {
  for_row_blocks(rows, [&](int start, int size) {
    kPanelTable[size - 1](a + start, ldk, bp, depth, c + start * ldc, ldc);
  });
}

// ------------------------------------------------------------------------------------------ phased work
// A loop is a sequence of phases (weight packing, then one per time step); each phase splits into `chunks`
// independent pieces over the hidden units, and phase p may start once all of phase p-1 is done. The caller and
// helper tasks on XLA's own intra-op pool each take their "home" chunks first (the same ones every phase, so a
// thread keeps its slice of the packed weights and the step's inputs in its own cache) and then any chunk still
// unclaimed. A helper that starts late (the pool busy with another op) or never just takes fewer chunks: the
// loop never waits on a thread that is not running, and no thread of ours competes with XLA's.
struct alignas(64) ChunkClaim {
  std::atomic<long> phase{-1};  // the last phase this chunk was claimed for
};

struct PhasedWork {
  long chunks = 1, phases = 0, threads = 1;
  const std::function<void(long, long)>* work = nullptr;  // (phase, chunk); only touched for a claimed chunk
  std::unique_ptr<ChunkClaim[]> claims;
  std::atomic<long> done{0}, next_thread{1};
};

inline void wait_for(const std::atomic<long>& counter, long target) {
  for (int spins = 0; counter.load(std::memory_order_acquire) < target; ++spins) {
    if (spins < 4000) {
      __builtin_ia32_pause();
    } else {
      sched_yield();
    }
  }
}

void participate(PhasedWork& state, long thread) {
  const long chunks = state.chunks;
  const long home_begin = chunks * thread / state.threads, home_end = chunks * (thread + 1) / state.threads;
  for (long phase = state.done.load(std::memory_order_acquire) / chunks; phase < state.phases; ++phase) {
    wait_for(state.done, phase * chunks);
    for (long k = 0; k < chunks; ++k) {
      const long chunk = (home_begin + k) % chunks;  // home chunks first, then the others in order
      long expected = phase - 1;
      if (k >= home_end - home_begin && state.claims[chunk].phase.load(std::memory_order_relaxed) != expected) {
        continue;
      }
      if (state.claims[chunk].phase.compare_exchange_strong(expected, phase, std::memory_order_acq_rel)) {
        (*state.work)(phase, chunk);
        state.done.fetch_add(1, std::memory_order_release);
      }
    }
    // A late helper skips ahead to the phase the others are in.
    phase = std::max(phase, state.done.load(std::memory_order_acquire) / chunks - 1);
  }
}

void run_phased(ffi::ThreadPool& pool, int helpers, long phases, long chunks,
                const std::function<void(long, long)>& work) {
  auto state = std::make_shared<PhasedWork>();  // shared: a helper may start after this call has returned
  state->chunks = chunks;
  state->phases = phases;
  state->threads = helpers + 1;
  state->work = &work;
  state->claims.reset(new ChunkClaim[chunks]);
  for (int h = 0; h < helpers; ++h) {
    pool.Schedule([state] {
      const long thread = state->next_thread.fetch_add(1, std::memory_order_relaxed);
      if (thread < state->threads) participate(*state, thread);
    });
  }
  participate(*state, 0);
  wait_for(state->done, phases * chunks);
}

// Helpers worth starting: none when a step is too small to split, else one fewer than the cores XLA uses.
int helper_count(ffi::ThreadPool& pool, long flops_per_step, long chunks) {
  if (flops_per_step < 400000 || chunks < 2) return 0;
  long threads = pool.num_threads();
  if (const char* env = std::getenv("RNN_JAX_KERNEL_THREADS")) threads = std::atol(env);
  return static_cast<int>(std::max(0L, std::min(threads, chunks) - 1));
}

struct AlignedBuffer {
  explicit AlignedBuffer(size_t floats)
      : data(static_cast<float*>(std::aligned_alloc(64, ((floats * sizeof(float) + 63) / 64) * 64 + 64))) {}
  ~AlignedBuffer() { std::free(data); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  float* data;
};

// Chunk c of `chunks` covers 16-unit panels [begin, end) of `panels`.
inline void chunk_panels(long chunk, long chunks, long panels, long& begin, long& end) {
  begin = panels * chunk / chunks;
  end = panels * (chunk + 1) / chunks;
}

// Units [begin, end) of each of `batch` rows, from src (row stride ld_src) to dst (row stride ld_dst).
inline void copy_units(float* dst, long ld_dst, const float* src, long ld_src, long batch, long begin, long end) {
  for (long b = 0; b < batch; ++b) {
    std::memcpy(dst + b * ld_dst + begin, src + b * ld_src + begin, sizeof(float) * (end - begin));
  }
}

}  // namespace

// Aliases: a comma inside a template argument would split the macro's arguments.
using Array2 = ffi::Buffer<ffi::F32, 2>;
using Array1 = ffi::Buffer<ffi::F32, 1>;
using Array3 = ffi::Buffer<ffi::F32, 3>;
using Labels = ffi::Buffer<ffi::S32, 1>;
