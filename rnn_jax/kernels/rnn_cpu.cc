// The LSTM's and the reset-after GRU's recurrent loops on the CPU, forward and backward, as XLA FFI handlers;
// also the output layer's softmax cross-entropy, and its training forward and backward passes (sections at the end).
//
// XLA runs a `lax.scan` body as a sequence of small kernels ("thunks"), each with a few microseconds of dispatch
// overhead and a thread-pool wake-up for the matrix product; at B=16, H=256 that is about half of each step.
// Here the whole loop is one call: per step one product with the recurrent weight, split over the hidden units
// between the calling thread and helpers on XLA's own pool (each slice's gate arithmetic needs only its own part
// of the product), with one synchronisation point per step.
//
// LSTM (the GRU's equations and shapes are at its section below):
//   forward  (per step t):  rec = h_{t-1} W^T;  pre = P_t + b + rec;  i, f, o = σ(pre_{i,f,o});  g = tanh(pre_g)
//                           c_t = f c_{t-1} + i g;  h_t = o tanh(c_t)          outputs hs, cs, acts = (i, f, o, g)
//   backward (reverse order): dh = dhs_t + dh_carry;  dc = dc_carry + dh o (1 - tanh²c_t)
//                           d_pre = (dc g i(1-i), dc c_{t-1} f(1-f), dh tanh(c_t) o(1-o), dc i (1-g²))
//                           dc_carry = dc f;  dh_carry = d_pre W                     outputs d_pre, dh_0, dc_0
// The weight gradient and the input products stay in XLA as single large products (see rnn_jax/fused.py).
//
// Shapes (float32, row-major): P (U x_t without the bias), acts, d_pre (T, B, 4H); b (4H,); hs, cs, dhs (T, B, H);
// W (4H, H) with gate blocks in the order i, f, o, g; h0, c0, dh_T, dc_T (B, H). The bias is added here rather
// than to P in XLA, which would be one more pass over the (T, B, 4H) products (2.7% of a `long` train step). Attribute `reverse` (0/1) runs time backwards, as lax.scan.
// Built by rnn_jax/kernels/__init__.py with the machine's own instruction set (-march=native).

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
constexpr int kMaxRows = 24;  // accumulators held in registers by one micro-kernel call

// ------------------------------------------------------------------------------------------ elementwise math
// NaN-preserving clamps (a comparison with NaN is false, so NaN passes through and propagates).
inline v16 clamp(v16 x, float lo, float hi) {
  v16 vlo = x - x + lo, vhi = x - x + hi;
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

using PanelFn = void (*)(const float*, long, const float*, int, float*, long);

// {kernel<1>, ..., kernel<kMaxRows>} for a micro-kernel family, `pick(std::integral_constant<int, ROWS>)` naming
// the instance for ROWS: calls dispatch on a block's row count at run time.
template <typename Pick, int... R>
constexpr auto make_rows_table(Pick pick, std::integer_sequence<int, R...>) {
  return std::array{pick(std::integral_constant<int, R + 1>{})...};
}
const auto kPanelTable = make_rows_table([](auto rows) -> PanelFn { return &panel_product<rows()>; },
                                         std::make_integer_sequence<int, kMaxRows>{});

// All rows of A (rows x depth, k-major with stride ldk) times one packed panel, in blocks of at most kMaxRows rows.
void rows_times_panel(const float* a, long ldk, int rows, const float* bp, int depth, float* c, long ldc) {
  int blocks = (rows + kMaxRows - 1) / kMaxRows;
  for (int start = 0, b = 0; b < blocks; ++b) {
    int size = (rows - start) / (blocks - b);
    kPanelTable[size - 1](a + start, ldk, bp, depth, c + start * ldc, ldc);
    start += size;
  }
}

// dst[k·batch + b] = src[b·ld_src + k] for every row b and k in [begin, end): a chunk's units of h (or d_pre) into
// the k-major copy that the next step's product reads.
inline void to_k_major(float* dst, const float* src, long ld_src, long batch, long begin, long end) {
  for (long b = 0; b < batch; ++b) {
    for (long k = begin; k < end; ++k) dst[k * batch + b] = src[b * ld_src + k];
  }
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

// Panels per block of a forward step: the products of a block, then its gate arithmetic, row by row. One panel per
// block when H is a whole number of panels: the next panel's products then overlap the arithmetic's latency and
// its inputs are still in L1 (per step 13% faster at H=256, 7-15% at 192, 208, 320, equal at 128, 512, 640);
// with a partial last panel (H=200, 650) the whole chunk as one block measured 4-8% faster.
inline long forward_panel_block(long hidden, long first, long last) {
  return hidden % kLanes == 0 ? 1 : std::max<long>(1, last - first);
}

// A chunk's forward step: for panels [first, last), rec[b][g·padded + 16p + c] = (h_{t-1} W^T)[b, g·H + 16p + c] for
// every gate, then gate_math(b, j) for every row b and unit offset j = 16p, block by block.
template <typename GateMath>
void forward_step_panels(const float* h_prev, long batch, const float* packed, int gates, long panels, long hidden,
                         float* rec, long ldr, long first, long last, GateMath&& gate_math) {
  const long block = forward_panel_block(hidden, first, last);
  for (long p0 = first; p0 < last; p0 += block) {
    for (long p = p0; p < p0 + block; ++p) {
      for (int g = 0; g < gates; ++g) {
        rows_times_panel(h_prev, batch, static_cast<int>(batch), packed + (g * panels + p) * hidden * kLanes,
                         static_cast<int>(hidden), rec + (g * panels + p) * kLanes, ldr);
      }
    }
    for (long b = 0; b < batch; ++b) {
      for (long p = p0; p < p0 + block; ++p) gate_math(b, p * kLanes);
    }
  }
}

// A chunk's backward phase for step s (s = 0..T, panels [first, last) of `gates`·H cotangent columns): panel by
// panel, first finishes step s-1 for the panel's units (s > 0: dh_carry = d_rec_{s-1} W from the k-major copy
// d_prev, then finish(p)), then runs step s's gate derivatives gate_derivs(b, j) for every row b at j = 16p; then
// writes its units of step s's d_rec (rows of d_rec_rows) into the k-major copy d_next. Phase T only finishes
// step T-1 and hands dh_carry to dh_out.
template <typename Finish, typename GateDerivs>
void backward_step_panels(long s, long steps, long batch, long hidden, int gate_count, const float* packed,
                          const float* d_prev, float* d_next, const float* d_rec_rows, float* dh_carry, long ldc,
                          float* dh_out, long first, long last, Finish&& finish, GateDerivs&& gate_derivs) {
  const long gates = gate_count * hidden;
  const auto finish_previous_step = [&](long p) {
    rows_times_panel(d_prev, batch, static_cast<int>(batch), packed + p * gates * kLanes, static_cast<int>(gates),
                     dh_carry + p * kLanes, ldc);
    finish(p);
  };
  const long unit_begin = first * kLanes, unit_end = std::min(last * kLanes, hidden);
  if (s == steps) {
    for (long p = first; p < last && s > 0; ++p) finish_previous_step(p);
    copy_units(dh_out, hidden, dh_carry, ldc, batch, unit_begin, unit_end);
    return;
  }
  for (long p = first; p < last; ++p) {
    if (s > 0) finish_previous_step(p);
    for (long b = 0; b < batch; ++b) gate_derivs(b, p * kLanes);
  }
  for (int g = 0; g < gate_count; ++g) {
    to_k_major(d_next, d_rec_rows, gates, batch, g * hidden + unit_begin, g * hidden + unit_end);
  }
}

// Enough chunks to balance a few threads, few enough that claiming tickets stays cheap.
inline long chunk_count(long panels) { return std::min<long>(panels, 8); }

ffi::Error check_shapes(const char* cell, int gates, long steps, long batch, long hidden, long weight_rows,
                        long weight_cols) {
  if (weight_rows != gates * hidden || weight_cols != hidden) {
    return ffi::Error::InvalidArgument(std::string(cell) + " kernel: expected W of shape (" + std::to_string(gates) +
                                       "H, H) with H=" + std::to_string(hidden) + ", got (" +
                                       std::to_string(weight_rows) + ", " + std::to_string(weight_cols) + ")");
  }
  if (steps < 0 || batch < 0) return ffi::Error::InvalidArgument(std::string(cell) + " kernel: negative size");
  return ffi::Error::Success();
}

// packed[g][p][k][16] = W[g·H + 16p + c, k] (zero beyond H) for panels [first, last) of each gate: the product
// h W^T, one 16-unit panel of one gate at a time.
void pack_gate_panels(const float* W, int gates, long hidden, long panels, long first, long last, float* packed) {
  for (int g = 0; g < gates; ++g) {
    for (long p = first; p < last; ++p) {
      float* dst = packed + (g * panels + p) * hidden * kLanes;
      for (long k = 0; k < hidden; ++k) {
        for (int c = 0; c < kLanes; ++c) {
          const long unit = p * kLanes + c;
          dst[k * kLanes + c] = unit < hidden ? W[(g * hidden + unit) * hidden + k] : 0.0f;
        }
      }
    }
  }
}

// packed[p][n][16] = W[n, 16p + c] (zero beyond H) for panels [first, last): the product d W over all n < rows.
void pack_column_panels(const float* W, long rows, long hidden, long first, long last, float* packed) {
  for (long p = first; p < last; ++p) {
    float* dst = packed + p * rows * kLanes;
    for (long n = 0; n < rows; ++n) {
      for (int c = 0; c < kLanes; ++c) {
        const long unit = p * kLanes + c;
        dst[n * kLanes + c] = unit < hidden ? W[n * hidden + unit] : 0.0f;
      }
    }
  }
}

// A step's input term of one gate slice, (U x_t)[k] + b[k] for the n units from offset k: the bias is added here,
// in the same order XLA would have added it to the products, so results equal a bias folded into P.
inline v16 input_term(const float* p_row, const float* bias, long k, int n) {
  return load_n(p_row + k, n) + load_n(bias + k, n);
}

// ------------------------------------------------------------------------------------------ forward
ffi::Error LstmForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 3> projected,
                           ffi::Buffer<ffi::F32, 2> weight, ffi::Buffer<ffi::F32, 2> h0,
                           ffi::Buffer<ffi::F32, 2> c0, ffi::Buffer<ffi::F32, 1> bias,
                           ffi::ResultBuffer<ffi::F32, 3> hs, ffi::ResultBuffer<ffi::F32, 3> cs,
                           ffi::ResultBuffer<ffi::F32, 3> acts, int64_t reverse) {
  const long steps = projected.dimensions()[0], batch = projected.dimensions()[1];
  const long hidden = h0.dimensions()[1];
  if (projected.dimensions()[2] != 4 * hidden || bias.dimensions()[0] != 4 * hidden) {
    return ffi::Error::InvalidArgument("LSTM kernel: projected inputs must be (T, B, 4H) and the bias (4H,)");
  }
  if (auto error = check_shapes("LSTM", 4, steps, batch, hidden, weight.dimensions()[0], weight.dimensions()[1]);
      error.failure()) {
    return error;
  }
  if (steps == 0 || batch == 0) return ffi::Error::Success();
  const float* P = projected.typed_data();
  const float* W = weight.typed_data();
  const float* H0 = h0.typed_data();
  const float* C0 = c0.typed_data();
  const float* bias_in = bias.typed_data();
  float* H = hs->typed_data();
  float* C = cs->typed_data();
  float* A = acts->typed_data();
  const long panels = (hidden + kLanes - 1) / kLanes, padded = panels * kLanes, chunks = chunk_count(panels);
  // packed[g][p][k][16] = W[g·H + 16p + c, k] (zero beyond H); rec[b][g·padded + 16p + c] = (h_{t-1} W^T)[b, g·H + 16p + c].
  // h_{t-1} is multiplied from a k-major copy (h_copy[k·B + b]), double-buffered so that one phase boundary per
  // step suffices; each chunk writes its units of h_t there after its gate arithmetic.
  const long ldr = 4 * padded + kLanes;
  AlignedBuffer packed(4 * padded * hidden), rec(batch * ldr), h_copy(2 * batch * hidden);

  const std::function<void(long, long)> work = [&](long phase, long chunk) {
    long first, last;
    chunk_panels(chunk, chunks, panels, first, last);
    const long unit_begin = first * kLanes, unit_end = std::min(last * kLanes, hidden);
    if (phase == 0) {  // pack this chunk's weight panels; copy its units of h0
      pack_gate_panels(W, 4, hidden, panels, first, last, packed.data);
      to_k_major(h_copy.data, H0, hidden, batch, unit_begin, unit_end);
      return;
    }
    const long s = phase - 1, t = reverse ? steps - 1 - s : s;
    const float* h_prev = h_copy.data + (s % 2) * batch * hidden;
    float* h_next = h_copy.data + ((s + 1) % 2) * batch * hidden;
    const float* c_prev = s == 0 ? C0 : C + (reverse ? t + 1 : t - 1) * batch * hidden;
    const long units = unit_end - unit_begin;
    for (long b = 0; b < batch; ++b) {
      const long row = (t * batch + b) * hidden;
      for (int g = 0; g < 4; ++g) {
        prefetch_span(P + 4 * row + g * hidden + unit_begin, units, false);
        prefetch_span(A + 4 * row + g * hidden + unit_begin, units, true);
      }
      prefetch_span(C + row + unit_begin, units, true);
      prefetch_span(H + row + unit_begin, units, true);
    }
    forward_step_panels(h_prev, batch, packed.data, 4, panels, hidden, rec.data, ldr, first, last,
                        [&](long b, long j) {
      const int n = static_cast<int>(std::min<long>(kLanes, unit_end - j));
      const float* p_row = P + (t * batch + b) * 4 * hidden;
      const float* r_row = rec.data + b * ldr;
      float* a_row = A + (t * batch + b) * 4 * hidden;
      const long row = (t * batch + b) * hidden;
      v16 i = sigmoid_v(input_term(p_row, bias_in, j, n) + load_n(r_row + j, n));
      v16 f = sigmoid_v(input_term(p_row, bias_in, hidden + j, n) + load_n(r_row + padded + j, n));
      v16 o = sigmoid_v(input_term(p_row, bias_in, 2 * hidden + j, n) + load_n(r_row + 2 * padded + j, n));
      v16 gg = tanh_v(input_term(p_row, bias_in, 3 * hidden + j, n) + load_n(r_row + 3 * padded + j, n));
      v16 c = f * load_n(c_prev + b * hidden + j, n) + i * gg;
      v16 h = o * tanh_v(c);
      store_n(C + row + j, c, n);
      store_n(H + row + j, h, n);
      store_n(a_row + j, i, n);
      store_n(a_row + hidden + j, f, n);
      store_n(a_row + 2 * hidden + j, o, n);
      store_n(a_row + 3 * hidden + j, gg, n);
    });
    to_k_major(h_next, H + t * batch * hidden, hidden, batch, unit_begin, unit_end);
  };
  run_phased(pool, helper_count(pool, 8 * batch * hidden * hidden, chunks), steps + 1, chunks, work);
  return ffi::Error::Success();
}

// ------------------------------------------------------------------------------------------ backward
ffi::Error LstmBackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 2> weight, ffi::Buffer<ffi::F32, 3> acts,
                            ffi::Buffer<ffi::F32, 3> cs, ffi::Buffer<ffi::F32, 2> c0,
                            ffi::Buffer<ffi::F32, 3> d_hs, ffi::Buffer<ffi::F32, 2> d_h_final,
                            ffi::Buffer<ffi::F32, 2> d_c_final, ffi::ResultBuffer<ffi::F32, 3> d_pre,
                            ffi::ResultBuffer<ffi::F32, 2> d_h0, ffi::ResultBuffer<ffi::F32, 2> d_c0,
                            int64_t reverse) {
  const long steps = cs.dimensions()[0], batch = cs.dimensions()[1], hidden = cs.dimensions()[2];
  if (auto error = check_shapes("LSTM", 4, steps, batch, hidden, weight.dimensions()[0], weight.dimensions()[1]);
      error.failure()) {
    return error;
  }
  const float* W = weight.typed_data();
  const float* A = acts.typed_data();
  const float* C = cs.typed_data();
  const float* C0 = c0.typed_data();
  const float* DH = d_hs.typed_data();
  const float* DH_final = d_h_final.typed_data();
  const float* DC_final = d_c_final.typed_data();
  float* D = d_pre->typed_data();
  float* dh_out = d_h0->typed_data();
  float* dc_out = d_c0->typed_data();  // doubles as the running dc carry
  if (batch == 0) return ffi::Error::Success();
  const long panels = (hidden + kLanes - 1) / kLanes, padded = panels * kLanes, chunks = chunk_count(panels);
  const long gates = 4 * hidden;
  // packed[p][n][16] = W[n, 16p + c] (zero beyond H); dh_carry (B, padded) = d_pre_{t} W, for step t-1.
  // d_pre_t is multiplied from a k-major, double-buffered copy (see the forward's h_copy).
  const long ldc = padded + kLanes;
  AlignedBuffer packed(padded * gates), dh_carry(batch * ldc), d_copy(2 * batch * gates);

  // Phase 0 packs and loads the final cotangents; phase s+1 first finishes step s-1 (dh_carry = d_pre W for
  // this chunk's units, which needs every unit's d_pre of that step) and then runs step s's gate derivatives for
  // the same units, which need only this chunk's dh_carry and dc; phase T+1 finishes the last step.
  const std::function<void(long, long)> work = [&](long phase, long chunk) {
    long first, last;
    chunk_panels(chunk, chunks, panels, first, last);
    const long unit_begin = first * kLanes, unit_end = std::min(last * kLanes, hidden);
    if (phase == 0) {
      pack_column_panels(W, gates, hidden, first, last, packed.data);
      copy_units(dh_carry.data, ldc, DH_final, hidden, batch, unit_begin, unit_end);
      copy_units(dc_out, hidden, DC_final, hidden, batch, unit_begin, unit_end);
      return;
    }
    const long s = phase - 1;
    const long t = s == steps ? 0 : (reverse ? s : steps - 1 - s);  // phase T only finishes step T-1
    if (s < steps) {
      const long units = unit_end - unit_begin;
      for (long b = 0; b < batch; ++b) {
        const long row = (t * batch + b) * hidden;
        for (int g = 0; g < 4; ++g) {
          prefetch_span(A + 4 * row + g * hidden + unit_begin, units, false);
          prefetch_span(D + 4 * row + g * hidden + unit_begin, units, true);
        }
        prefetch_span(C + row + unit_begin, units, false);
        prefetch_span(DH + row + unit_begin, units, false);
      }
    }
    const bool first_step = reverse ? t == steps - 1 : t == 0;
    const float* c_prev = first_step ? C0 : C + (reverse ? t + 1 : t - 1) * batch * hidden;
    backward_step_panels(s, steps, batch, hidden, 4, packed.data, d_copy.data + ((s + 1) % 2) * batch * gates,
                         d_copy.data + (s % 2) * batch * gates, D + t * batch * gates, dh_carry.data, ldc, dh_out,
                         first, last, [](long) {}, [&](long b, long j) {
      const int n = static_cast<int>(std::min<long>(kLanes, unit_end - j));
      const float* a_row = A + (t * batch + b) * gates;
      float* d_row = D + (t * batch + b) * gates;
      const long row = (t * batch + b) * hidden;
      v16 i = load_n(a_row + j, n), f = load_n(a_row + hidden + j, n);
      v16 o = load_n(a_row + 2 * hidden + j, n), gg = load_n(a_row + 3 * hidden + j, n);
      v16 tanh_c = tanh_v(load_n(C + row + j, n));
      v16 dh = load_n(DH + row + j, n) + load_n(dh_carry.data + b * ldc + j, n);
      v16 dc = load_n(dc_out + b * hidden + j, n) + dh * o * (1.0f - tanh_c * tanh_c);
      const v16 d_gates[4] = {dc * gg * i * (1.0f - i), dc * load_n(c_prev + b * hidden + j, n) * f * (1.0f - f),
                              dh * tanh_c * o * (1.0f - o), dc * i * (1.0f - gg * gg)};
      for (int g = 0; g < 4; ++g) store_n(d_row + g * hidden + j, d_gates[g], n);
      store_n(dc_out + b * hidden + j, dc * f, n);
    });
  };
  run_phased(pool, helper_count(pool, 8 * batch * hidden * hidden, chunks), steps + 2, chunks, work);
  return ffi::Error::Success();
}


// ------------------------------------------------------------------------------------------ GRU (reset-after)
//   forward:  rec = h_{t-1} W^T;  r, u = σ(P_{r,u} + b_{r,u} + rec_{r,u});  ρ = rec_g + b_rg;  g = tanh(P_g + b_g + r ρ)
//             h_t = u g + (1 - u) h_{t-1}                                          outputs hs, acts = (r, u, g, ρ)
//   backward: dh = dhs_t + dh_carry;  d_pre_g = dh u (1-g²);  d_pre_r = d_pre_g ρ r(1-r);  d_pre_u = dh (g - h_{t-1}) u(1-u)
//             d_projected = (d_pre_r, d_pre_u, d_pre_g);  d_rec = (d_pre_r, d_pre_u, r d_pre_g)
//             dh_carry = dh (1 - u) + d_rec W                                    outputs d_projected, d_rec, dh_0
ffi::Error GruForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 3> projected, ffi::Buffer<ffi::F32, 2> weight,
                          ffi::Buffer<ffi::F32, 1> recurrent_bias, ffi::Buffer<ffi::F32, 2> h0,
                          ffi::Buffer<ffi::F32, 1> bias, ffi::ResultBuffer<ffi::F32, 3> hs,
                          ffi::ResultBuffer<ffi::F32, 3> acts, int64_t reverse) {
  const long steps = projected.dimensions()[0], batch = projected.dimensions()[1];
  const long hidden = h0.dimensions()[1];
  if (projected.dimensions()[2] != 3 * hidden || recurrent_bias.dimensions()[0] != hidden ||
      bias.dimensions()[0] != 3 * hidden) {
    return ffi::Error::InvalidArgument("GRU kernel: projected inputs must be (T, B, 3H), b_rg (H,) and the bias (3H,)");
  }
  if (auto error = check_shapes("GRU", 3, steps, batch, hidden, weight.dimensions()[0], weight.dimensions()[1]);
      error.failure()) {
    return error;
  }
  if (steps == 0 || batch == 0) return ffi::Error::Success();
  const float* P = projected.typed_data();
  const float* W = weight.typed_data();
  const float* BRG = recurrent_bias.typed_data();
  const float* H0 = h0.typed_data();
  const float* bias_in = bias.typed_data();
  float* H = hs->typed_data();
  float* A = acts->typed_data();
  const long panels = (hidden + kLanes - 1) / kLanes, padded = panels * kLanes, chunks = chunk_count(panels);
  const long ldr = 3 * padded + kLanes;  // h_copy k-major, as in the LSTM
  AlignedBuffer packed(3 * padded * hidden), rec(batch * ldr), h_copy(2 * batch * hidden);

  const std::function<void(long, long)> work = [&](long phase, long chunk) {
    long first, last;
    chunk_panels(chunk, chunks, panels, first, last);
    const long unit_begin = first * kLanes, unit_end = std::min(last * kLanes, hidden);
    if (phase == 0) {
      pack_gate_panels(W, 3, hidden, panels, first, last, packed.data);
      to_k_major(h_copy.data, H0, hidden, batch, unit_begin, unit_end);
      return;
    }
    const long s = phase - 1, t = reverse ? steps - 1 - s : s;
    const float* h_prev = h_copy.data + (s % 2) * batch * hidden;
    float* h_next = h_copy.data + ((s + 1) % 2) * batch * hidden;
    const float* h_prev_rows = s == 0 ? H0 : H + (reverse ? t + 1 : t - 1) * batch * hidden;
    const long units = unit_end - unit_begin;
    for (long b = 0; b < batch; ++b) {
      const long row = (t * batch + b) * hidden;
      for (int g = 0; g < 3; ++g) prefetch_span(P + 3 * row + g * hidden + unit_begin, units, false);
      for (int g = 0; g < 4; ++g) prefetch_span(A + 4 * row + g * hidden + unit_begin, units, true);
      prefetch_span(H + row + unit_begin, units, true);
    }
    forward_step_panels(h_prev, batch, packed.data, 3, panels, hidden, rec.data, ldr, first, last,
                        [&](long b, long j) {
      const int n = static_cast<int>(std::min<long>(kLanes, unit_end - j));
      const float* p_row = P + (t * batch + b) * 3 * hidden;
      const float* r_row = rec.data + b * ldr;
      float* a_row = A + (t * batch + b) * 4 * hidden;
      const long row = (t * batch + b) * hidden;
      v16 r = sigmoid_v(input_term(p_row, bias_in, j, n) + load_n(r_row + j, n));
      v16 u = sigmoid_v(input_term(p_row, bias_in, hidden + j, n) + load_n(r_row + padded + j, n));
      v16 rho = load_n(r_row + 2 * padded + j, n) + load_n(BRG + j, n);
      v16 g = tanh_v(input_term(p_row, bias_in, 2 * hidden + j, n) + r * rho);
      v16 previous = load_n(h_prev_rows + b * hidden + j, n);
      v16 h = u * g + (1.0f - u) * previous;
      store_n(H + row + j, h, n);
      store_n(a_row + j, r, n);
      store_n(a_row + hidden + j, u, n);
      store_n(a_row + 2 * hidden + j, g, n);
      store_n(a_row + 3 * hidden + j, rho, n);
    });
    to_k_major(h_next, H + t * batch * hidden, hidden, batch, unit_begin, unit_end);
  };
  run_phased(pool, helper_count(pool, 6 * batch * hidden * hidden, chunks), steps + 1, chunks, work);
  return ffi::Error::Success();
}

ffi::Error GruBackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 2> weight, ffi::Buffer<ffi::F32, 3> acts,
                           ffi::Buffer<ffi::F32, 3> hs, ffi::Buffer<ffi::F32, 2> h0, ffi::Buffer<ffi::F32, 3> d_hs,
                           ffi::Buffer<ffi::F32, 2> d_h_final, ffi::ResultBuffer<ffi::F32, 3> d_projected,
                           ffi::ResultBuffer<ffi::F32, 3> d_rec, ffi::ResultBuffer<ffi::F32, 2> d_h0,
                           int64_t reverse) {
  const long steps = hs.dimensions()[0], batch = hs.dimensions()[1], hidden = hs.dimensions()[2];
  if (auto error = check_shapes("GRU", 3, steps, batch, hidden, weight.dimensions()[0], weight.dimensions()[1]);
      error.failure()) {
    return error;
  }
  const float* W = weight.typed_data();
  const float* A = acts.typed_data();
  const float* H = hs.typed_data();
  const float* H0 = h0.typed_data();
  const float* DH = d_hs.typed_data();
  const float* DH_final = d_h_final.typed_data();
  float* DP = d_projected->typed_data();
  float* DR = d_rec->typed_data();
  float* dh_out = d_h0->typed_data();
  if (batch == 0) return ffi::Error::Success();
  const long panels = (hidden + kLanes - 1) / kLanes, padded = panels * kLanes, chunks = chunk_count(panels);
  const long gates = 3 * hidden, ldc = padded + kLanes;
  // dh_carry = dh (1 - u) (stored as `direct` by a step) + d_rec W (added by the next phase's product).
  AlignedBuffer packed(padded * gates), dh_carry(batch * ldc), direct(batch * ldc), d_copy(2 * batch * gates);

  const std::function<void(long, long)> work = [&](long phase, long chunk) {
    long first, last;
    chunk_panels(chunk, chunks, panels, first, last);
    const long unit_begin = first * kLanes, unit_end = std::min(last * kLanes, hidden);
    if (phase == 0) {
      pack_column_panels(W, gates, hidden, first, last, packed.data);
      copy_units(dh_carry.data, ldc, DH_final, hidden, batch, unit_begin, unit_end);
      return;
    }
    const long s = phase - 1;
    const long t = s == steps ? 0 : (reverse ? s : steps - 1 - s);  // phase T only finishes step T-1
    const auto add_direct = [&](long p) {  // dh_carry of step s-1 = d_rec W (just multiplied) + dh (1 - u)
      for (long b = 0; b < batch; ++b) {
        for (long j = p * kLanes; j < std::min((p + 1) * kLanes, hidden); ++j) {
          dh_carry.data[b * ldc + j] += direct.data[b * ldc + j];
        }
      }
    };
    const bool first_step = reverse ? t == steps - 1 : t == 0;
    const float* h_prev = first_step ? H0 : H + (reverse ? t + 1 : t - 1) * batch * hidden;
    backward_step_panels(s, steps, batch, hidden, 3, packed.data, d_copy.data + ((s + 1) % 2) * batch * gates,
                         d_copy.data + (s % 2) * batch * gates, DR + t * batch * gates, dh_carry.data, ldc, dh_out,
                         first, last, add_direct, [&](long b, long j) {
      const int n = static_cast<int>(std::min<long>(kLanes, unit_end - j));
      const float* a_row = A + (t * batch + b) * 4 * hidden;
      float* dp_row = DP + (t * batch + b) * gates;
      float* dr_row = DR + (t * batch + b) * gates;
      const long row = (t * batch + b) * hidden;
      v16 r = load_n(a_row + j, n), u = load_n(a_row + hidden + j, n);
      v16 g = load_n(a_row + 2 * hidden + j, n), rho = load_n(a_row + 3 * hidden + j, n);
      v16 dh = load_n(DH + row + j, n) + load_n(dh_carry.data + b * ldc + j, n);
      v16 d_pre_g = dh * u * (1.0f - g * g);
      v16 d_pre_r = d_pre_g * rho * r * (1.0f - r);
      v16 d_pre_u = dh * (g - load_n(h_prev + b * hidden + j, n)) * u * (1.0f - u);
      v16 d_rec_g = d_pre_g * r;
      store_n(dp_row + j, d_pre_r, n);
      store_n(dp_row + hidden + j, d_pre_u, n);
      store_n(dp_row + 2 * hidden + j, d_pre_g, n);
      store_n(dr_row + j, d_pre_r, n);
      store_n(dr_row + hidden + j, d_pre_u, n);
      store_n(dr_row + 2 * hidden + j, d_rec_g, n);
      store_n(direct.data + b * ldc + j, dh * (1.0f - u), n);
    });
  };
  run_phased(pool, helper_count(pool, 6 * batch * hidden * hidden, chunks), steps + 2, chunks, work);
  return ffi::Error::Success();
}


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
  v16 e = exp_v(x);
  return x < -87.0f ? e - e : e;
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

// Aliases: a comma inside a template argument would split the macro's arguments.
using Array2 = ffi::Buffer<ffi::F32, 2>;
using Array1 = ffi::Buffer<ffi::F32, 1>;
using Array3 = ffi::Buffer<ffi::F32, 3>;
using Labels = ffi::Buffer<ffi::S32, 1>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnJaxLstmForward, LstmForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array3>()
                                  .Arg<Array2>()
                                  .Arg<Array2>()
                                  .Arg<Array2>()
                                  .Arg<Array1>()
                                  .Ret<Array3>()
                                  .Ret<Array3>()
                                  .Ret<Array3>()
                                  .Attr<int64_t>("reverse"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnJaxLstmBackward, LstmBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array2>()
                                  .Arg<Array3>()
                                  .Arg<Array3>()
                                  .Arg<Array2>()
                                  .Arg<Array3>()
                                  .Arg<Array2>()
                                  .Arg<Array2>()
                                  .Ret<Array3>()
                                  .Ret<Array2>()
                                  .Ret<Array2>()
                                  .Attr<int64_t>("reverse"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnJaxGruForward, GruForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array3>()
                                  .Arg<Array2>()
                                  .Arg<Array1>()
                                  .Arg<Array2>()
                                  .Arg<Array1>()
                                  .Ret<Array3>()
                                  .Ret<Array3>()
                                  .Attr<int64_t>("reverse"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnJaxGruBackward, GruBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array2>()
                                  .Arg<Array3>()
                                  .Arg<Array3>()
                                  .Arg<Array2>()
                                  .Arg<Array3>()
                                  .Arg<Array2>()
                                  .Ret<Array3>()
                                  .Ret<Array3>()
                                  .Ret<Array2>()
                                  .Attr<int64_t>("reverse"));

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
