// The LSTM's and the reset-after GRU's recurrent loops on the CPU, forward and backward, as XLA FFI handlers;
// the output layer's kernels are in xent.cc, the shared vector math and thread pool work in simd.h.
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
// The weight gradient and the input products stay in XLA as single large products (see rnn_jax/runners/fused.py).
//
// Shapes (float32, row-major): P (U x_t without the bias), acts, d_pre (T, B, 4H); b (4H,); hs, cs, dhs (T, B, H);
// W (4H, H) with gate blocks in the order i, f, o, g; h0, c0, dh_T, dc_T (B, H). The bias is added here rather
// than to P in XLA, which would be one more pass over the (T, B, 4H) products (2.7% of a `long` train step).
// Attribute `reverse` (0/1) runs time backwards, as lax.scan; `bf16_products` (0/1) picks the per-step product's
// operand format (operands.h).
// Built by rnn_jax/kernels/_build.py with the machine's own instruction set (-march=native).

#include "operands.h"

namespace {

// Panels per block of a forward step: the products of a block, then its gate arithmetic, row by row. One panel per
// block when H is a whole number of panels: the next panel's products then overlap the arithmetic's latency and
// its inputs are still in L1 (per step 13% faster at H=256, 7-15% at 192, 208, 320, equal at 128, 512, 640);
// with a partial last panel (H=200, 650) the whole chunk as one block measured 4-8% faster.
inline long forward_panel_block(long hidden, long first, long last) {
  return hidden % kLanes == 0 ? 1 : std::max<long>(1, last - first);
}

// A chunk's forward step: for panels [first, last), rec[b][g·padded + 16p + c] = (h_{t-1} W^T)[b, g·H + 16p + c] for
// every gate, then gate_math(b, j) for every row b and unit offset j = 16p, block by block.
template <typename Ops, typename GateMath>
void forward_step_panels(const typename Ops::Elem* h_prev, long batch, const typename Ops::Elem* packed, int gates,
                         long panels, long hidden,
                         float* rec, long ldr, long first, long last, GateMath&& gate_math) {
  const long block = forward_panel_block(hidden, first, last);
  for (long p0 = first; p0 < last; p0 += block) {
    for (long p = p0; p < p0 + block; ++p) {
      for (int g = 0; g < gates; ++g) {
        Ops::product(h_prev, batch, packed + (g * panels + p) * hidden * kLanes, hidden,
                     rec + (g * panels + p) * kLanes, ldr);
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
template <typename Ops, typename Finish, typename GateDerivs>
void backward_step_panels(long s, long steps, long batch, long hidden, int gate_count,
                          const typename Ops::Elem* packed, const typename Ops::Elem* d_prev,
                          typename Ops::Elem* d_next, const float* d_rec_rows, float* dh_carry, long ldc,
                          float* dh_out, long first, long last, Finish&& finish, GateDerivs&& gate_derivs) {
  const long gates = gate_count * hidden;
  const auto finish_previous_step = [&](long p) {
    Ops::product(d_prev, batch, packed + p * gates * kLanes, gates, dh_carry + p * kLanes, ldc);
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
    Ops::to_k_major(d_next, d_rec_rows, gates, batch, g * hidden + unit_begin, g * hidden + unit_end);
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

// A step's input term of one gate slice, (U x_t)[k] + b[k] for the n units from offset k: the bias is added here,
// in the same order XLA would have added it to the products, so results equal a bias folded into P.
inline v16 input_term(const float* p_row, const float* bias, long k, int n) {
  return load_n(p_row + k, n) + load_n(bias + k, n);
}

// ------------------------------------------------------------------------------------------ the two loops
// Every cell runs the same forward and backward loops; a cell is a struct with the gate count kGates and hooks for
// its own arithmetic. Both loops take the weight W (kGates·H, H) and write or read h through the loop's own buffers.
//
// Forward hooks: prefetch(t, b, unit_begin, units) warms row b of step t; step(t, t_prev, b, j, n, rec_row, padded)
// runs the gate arithmetic for units [j, j + n) of row b at step t (t_prev = -1 at the first step, whose state is
// the initial one), where rec_row[g·padded + k] = (h_{t-1} W^T)[g·H + k], and writes h_t to H.
template <typename Ops, typename Cell>
void forward_loop(ffi::ThreadPool pool, const Cell& cell, long steps, long batch, long hidden, const float* W,
                  const float* H0, float* H, bool reverse) {
  constexpr int gates = Cell::kGates;
  const long panels = (hidden + kLanes - 1) / kLanes, padded = panels * kLanes, chunks = chunk_count(panels);
  // packed[g][p][k][16] = W[g·H + 16p + c, k] (zero beyond H); rec[b][g·padded + 16p + c] = (h_{t-1} W^T)[b, g·H + 16p + c].
  // h_{t-1} is multiplied from a k-major copy (h_copy[k·B + b]), double-buffered so that one phase boundary per
  // step suffices; each chunk writes its units of h_t there after its gate arithmetic.
  const long ldr = gates * padded + kLanes;
  using Elem = typename Ops::Elem;
  AlignedBuffer packed_buffer(gates * padded * hidden), rec(batch * ldr), h_copy_buffer(2 * batch * hidden);
  Elem *packed = reinterpret_cast<Elem*>(packed_buffer.data), *h_copy = reinterpret_cast<Elem*>(h_copy_buffer.data);

  const std::function<void(long, long)> work = [&](long phase, long chunk) {
    long first, last;
    chunk_panels(chunk, chunks, panels, first, last);
    const long unit_begin = first * kLanes, unit_end = std::min(last * kLanes, hidden);
    if (phase == 0) {  // pack this chunk's weight panels; copy its units of h0
      Ops::pack_gate_panels(W, gates, hidden, panels, first, last, packed);
      Ops::to_k_major(h_copy, H0, hidden, batch, unit_begin, unit_end);
      return;
    }
    const long s = phase - 1, t = reverse ? steps - 1 - s : s;
    const long t_prev = s == 0 ? -1 : (reverse ? t + 1 : t - 1);
    const Elem* h_prev = h_copy + (s % 2) * batch * hidden;
    Elem* h_next = h_copy + ((s + 1) % 2) * batch * hidden;
    for (long b = 0; b < batch; ++b) cell.prefetch(t, b, unit_begin, unit_end - unit_begin);
    forward_step_panels<Ops>(h_prev, batch, packed, gates, panels, hidden, rec.data, ldr, first, last,
                        [&](long b, long j) {
      const int n = static_cast<int>(std::min<long>(kLanes, unit_end - j));
      cell.step(t, t_prev, b, j, n, rec.data + b * ldr, padded);
    });
    Ops::to_k_major(h_next, H + t * batch * hidden, hidden, batch, unit_begin, unit_end);
  };
  run_phased(pool, helper_count(pool, 2 * gates * batch * hidden * hidden, chunks), steps + 1, chunks, work);
}

// Backward hooks: start(unit_begin, unit_end) loads the cell's own final cotangents; prefetch as forward;
// derivs(t, t_prev, b, j, n, dh_carry_row) runs step t's gate derivatives for units [j, j + n) of row b, writing
// d_rec (T, B, kGates·H), the cotangent that multiplies W; finish(p, dh_carry, ldc) completes dh_carry of the
// previous step for panel p after the loop has added d_rec W to it.
// Phase 0 packs and loads the final cotangents; phase s+1 first finishes step s-1 (dh_carry = d_rec W for this
// chunk's units, which needs every unit's d_rec of that step) and then runs step s's gate derivatives for the same
// units, which need only this chunk's dh_carry; phase T+1 finishes the last step.
template <typename Ops, typename Cell>
void backward_loop(ffi::ThreadPool pool, Cell& cell, long steps, long batch, long hidden, const float* W,
                   const float* DH_final, const float* d_rec, float* dh_out, bool reverse) {
  constexpr int gate_count = Cell::kGates;
  const long panels = (hidden + kLanes - 1) / kLanes, padded = panels * kLanes, chunks = chunk_count(panels);
  const long gates = gate_count * hidden;
  // packed[p][n][16] = W[n, 16p + c] (zero beyond H); dh_carry (B, padded) = d_rec_t W, for step t-1.
  // d_rec_t is multiplied from a k-major, double-buffered copy (see the forward's h_copy).
  const long ldc = padded + kLanes;
  using Elem = typename Ops::Elem;
  AlignedBuffer packed_buffer(padded * gates), dh_carry(batch * ldc), d_copy_buffer(2 * batch * gates);
  Elem *packed = reinterpret_cast<Elem*>(packed_buffer.data), *d_copy = reinterpret_cast<Elem*>(d_copy_buffer.data);

  const std::function<void(long, long)> work = [&](long phase, long chunk) {
    long first, last;
    chunk_panels(chunk, chunks, panels, first, last);
    const long unit_begin = first * kLanes, unit_end = std::min(last * kLanes, hidden);
    if (phase == 0) {
      Ops::pack_column_panels(W, gates, hidden, first, last, packed);
      copy_units(dh_carry.data, ldc, DH_final, hidden, batch, unit_begin, unit_end);
      cell.start(unit_begin, unit_end);
      return;
    }
    const long s = phase - 1;
    const long t = s == steps ? 0 : (reverse ? s : steps - 1 - s);  // phase T only finishes step T-1
    if (s < steps) {
      for (long b = 0; b < batch; ++b) cell.prefetch(t, b, unit_begin, unit_end - unit_begin);
    }
    const bool first_step = reverse ? t == steps - 1 : t == 0;
    const long t_prev = first_step ? -1 : (reverse ? t + 1 : t - 1);
    backward_step_panels<Ops>(s, steps, batch, hidden, gate_count, packed,
                         d_copy + ((s + 1) % 2) * batch * gates, d_copy + (s % 2) * batch * gates,
                         d_rec + t * batch * gates, dh_carry.data, ldc, dh_out, first, last,
                         [&](long p) { cell.finish(p, dh_carry.data, ldc); }, [&](long b, long j) {
      const int n = static_cast<int>(std::min<long>(kLanes, unit_end - j));
      cell.derivs(t, t_prev, b, j, n, dh_carry.data + b * ldc);
    });
  };
  run_phased(pool, helper_count(pool, 2 * gate_count * batch * hidden * hidden, chunks), steps + 2, chunks, work);
}

// Runs `loop(ops)` with the operand format the call asked for (attribute bf16_products: operands.h); the bf16
// format needs a build with AVX512-BF16 and an even H (the Python side asks for it only then).
template <typename Loop>
ffi::Error with_operands(int64_t bf16_products, long hidden, Loop&& loop) {
  if (bf16_products == 0) {
    loop(F32Operands{});
    return ffi::Error::Success();
  }
#if defined(__AVX512BF16__)
  if (hidden % 2 != 0) {
    return ffi::Error::InvalidArgument("bf16 products need an even hidden size, got H=" + std::to_string(hidden) +
                                       "; call without bf16_products");
  }
  loop(Bf16Operands{});
  return ffi::Error::Success();
#else
  return ffi::Error::InvalidArgument("bf16 products need AVX512-BF16, which this build lacks; call without "
                                     "bf16_products");
#endif
}

// ------------------------------------------------------------------------------------------ LSTM
struct LstmForward {
  static constexpr int kGates = 4;
  const float *P, *bias, *C0;
  float *H, *C, *A;
  long batch, hidden;

  void prefetch(long t, long b, long unit_begin, long units) const {
    const long row = (t * batch + b) * hidden;
    for (int g = 0; g < 4; ++g) {
      prefetch_span(P + 4 * row + g * hidden + unit_begin, units, false);
      prefetch_span(A + 4 * row + g * hidden + unit_begin, units, true);
    }
    prefetch_span(C + row + unit_begin, units, true);
    prefetch_span(H + row + unit_begin, units, true);
  }

  void step(long t, long t_prev, long b, long j, int n, const float* r_row, long padded) const {
    const float* p_row = P + (t * batch + b) * 4 * hidden;
    float* a_row = A + (t * batch + b) * 4 * hidden;
    const long row = (t * batch + b) * hidden;
    const float* c_prev = t_prev < 0 ? C0 + b * hidden : C + (t_prev * batch + b) * hidden;
    v16 i = sigmoid_v(input_term(p_row, bias, j, n) + load_n(r_row + j, n));
    v16 f = sigmoid_v(input_term(p_row, bias, hidden + j, n) + load_n(r_row + padded + j, n));
    v16 o = sigmoid_v(input_term(p_row, bias, 2 * hidden + j, n) + load_n(r_row + 2 * padded + j, n));
    v16 gg = tanh_v(input_term(p_row, bias, 3 * hidden + j, n) + load_n(r_row + 3 * padded + j, n));
    v16 c = f * load_n(c_prev + j, n) + i * gg;
    v16 h = o * tanh_v(c);
    store_n(C + row + j, c, n);
    store_n(H + row + j, h, n);
    store_n(a_row + j, i, n);
    store_n(a_row + hidden + j, f, n);
    store_n(a_row + 2 * hidden + j, o, n);
    store_n(a_row + 3 * hidden + j, gg, n);
  }
};

struct LstmBackward {
  static constexpr int kGates = 4;
  const float *A, *C, *C0, *DH, *DC_final;
  float *D, *dc;  // dc: the running dc carry, which ends as dc_0
  long batch, hidden;

  void start(long unit_begin, long unit_end) { copy_units(dc, hidden, DC_final, hidden, batch, unit_begin, unit_end); }

  void prefetch(long t, long b, long unit_begin, long units) const {
    const long row = (t * batch + b) * hidden;
    for (int g = 0; g < 4; ++g) {
      prefetch_span(A + 4 * row + g * hidden + unit_begin, units, false);
      prefetch_span(D + 4 * row + g * hidden + unit_begin, units, true);
    }
    prefetch_span(C + row + unit_begin, units, false);
    prefetch_span(DH + row + unit_begin, units, false);
  }

  void finish(long, float*, long) const {}

  void derivs(long t, long t_prev, long b, long j, int n, const float* dh_carry_row) const {
    const float* a_row = A + (t * batch + b) * 4 * hidden;
    float* d_row = D + (t * batch + b) * 4 * hidden;
    const long row = (t * batch + b) * hidden;
    const float* c_prev = t_prev < 0 ? C0 + b * hidden : C + (t_prev * batch + b) * hidden;
    v16 i = load_n(a_row + j, n), f = load_n(a_row + hidden + j, n);
    v16 o = load_n(a_row + 2 * hidden + j, n), gg = load_n(a_row + 3 * hidden + j, n);
    v16 tanh_c = tanh_v(load_n(C + row + j, n));
    v16 dh = load_n(DH + row + j, n) + load_n(dh_carry_row + j, n);
    v16 dc_t = load_n(dc + b * hidden + j, n) + dh * o * (1.0f - tanh_c * tanh_c);
    const v16 d_gates[4] = {dc_t * gg * i * (1.0f - i), dc_t * load_n(c_prev + j, n) * f * (1.0f - f),
                            dh * tanh_c * o * (1.0f - o), dc_t * i * (1.0f - gg * gg)};
    for (int g = 0; g < 4; ++g) store_n(d_row + g * hidden + j, d_gates[g], n);
    store_n(dc + b * hidden + j, dc_t * f, n);
  }
};

ffi::Error LstmForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 3> projected,
                           ffi::Buffer<ffi::F32, 2> weight, ffi::Buffer<ffi::F32, 2> h0,
                           ffi::Buffer<ffi::F32, 2> c0, ffi::Buffer<ffi::F32, 1> bias,
                           ffi::ResultBuffer<ffi::F32, 3> hs, ffi::ResultBuffer<ffi::F32, 3> cs,
                           ffi::ResultBuffer<ffi::F32, 3> acts, int64_t reverse, int64_t bf16_products) {
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
  const LstmForward cell{projected.typed_data(), bias.typed_data(), c0.typed_data(), hs->typed_data(),
                         cs->typed_data(), acts->typed_data(), batch, hidden};
  return with_operands(bf16_products, hidden, [&](auto ops) {
    forward_loop<decltype(ops)>(pool, cell, steps, batch, hidden, weight.typed_data(), h0.typed_data(), cell.H,
                                reverse != 0);
  });
}

ffi::Error LstmBackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 2> weight, ffi::Buffer<ffi::F32, 3> acts,
                            ffi::Buffer<ffi::F32, 3> cs, ffi::Buffer<ffi::F32, 2> c0,
                            ffi::Buffer<ffi::F32, 3> d_hs, ffi::Buffer<ffi::F32, 2> d_h_final,
                            ffi::Buffer<ffi::F32, 2> d_c_final, ffi::ResultBuffer<ffi::F32, 3> d_pre,
                            ffi::ResultBuffer<ffi::F32, 2> d_h0, ffi::ResultBuffer<ffi::F32, 2> d_c0,
                            int64_t reverse, int64_t bf16_products) {
  const long steps = cs.dimensions()[0], batch = cs.dimensions()[1], hidden = cs.dimensions()[2];
  if (auto error = check_shapes("LSTM", 4, steps, batch, hidden, weight.dimensions()[0], weight.dimensions()[1]);
      error.failure()) {
    return error;
  }
  if (batch == 0) return ffi::Error::Success();
  LstmBackward cell{acts.typed_data(), cs.typed_data(), c0.typed_data(), d_hs.typed_data(), d_c_final.typed_data(),
                    d_pre->typed_data(), d_c0->typed_data(), batch, hidden};
  return with_operands(bf16_products, hidden, [&](auto ops) {
    backward_loop<decltype(ops)>(pool, cell, steps, batch, hidden, weight.typed_data(), d_h_final.typed_data(),
                                 cell.D, d_h0->typed_data(), reverse != 0);
  });
}

// ------------------------------------------------------------------------------------------ GRU (reset-after)
//   forward:  rec = h_{t-1} W^T;  r, u = σ(P_{r,u} + b_{r,u} + rec_{r,u});  ρ = rec_g + b_rg;  g = tanh(P_g + b_g + r ρ)
//             h_t = u g + (1 - u) h_{t-1}                                          outputs hs, acts = (r, u, g, ρ)
//   backward: dh = dhs_t + dh_carry;  d_pre_g = dh u (1-g²);  d_pre_r = d_pre_g ρ r(1-r);  d_pre_u = dh (g - h_{t-1}) u(1-u)
//             d_projected = (d_pre_r, d_pre_u, d_pre_g);  d_rec = (d_pre_r, d_pre_u, r d_pre_g)
//             dh_carry = dh (1 - u) + d_rec W                                    outputs d_projected, d_rec, dh_0
struct GruForward {
  static constexpr int kGates = 3;
  const float *P, *bias, *BRG, *H0;
  float *H, *A;
  long batch, hidden;

  void prefetch(long t, long b, long unit_begin, long units) const {
    const long row = (t * batch + b) * hidden;
    for (int g = 0; g < 3; ++g) prefetch_span(P + 3 * row + g * hidden + unit_begin, units, false);
    for (int g = 0; g < 4; ++g) prefetch_span(A + 4 * row + g * hidden + unit_begin, units, true);
    prefetch_span(H + row + unit_begin, units, true);
  }

  void step(long t, long t_prev, long b, long j, int n, const float* r_row, long padded) const {
    const float* p_row = P + (t * batch + b) * 3 * hidden;
    float* a_row = A + (t * batch + b) * 4 * hidden;
    const long row = (t * batch + b) * hidden;
    const float* h_prev = t_prev < 0 ? H0 + b * hidden : H + (t_prev * batch + b) * hidden;
    v16 r = sigmoid_v(input_term(p_row, bias, j, n) + load_n(r_row + j, n));
    v16 u = sigmoid_v(input_term(p_row, bias, hidden + j, n) + load_n(r_row + padded + j, n));
    v16 rho = load_n(r_row + 2 * padded + j, n) + load_n(BRG + j, n);
    v16 g = tanh_v(input_term(p_row, bias, 2 * hidden + j, n) + r * rho);
    v16 h = u * g + (1.0f - u) * load_n(h_prev + j, n);
    store_n(H + row + j, h, n);
    store_n(a_row + j, r, n);
    store_n(a_row + hidden + j, u, n);
    store_n(a_row + 2 * hidden + j, g, n);
    store_n(a_row + 3 * hidden + j, rho, n);
  }
};

struct GruBackward {
  static constexpr int kGates = 3;
  const float *A, *H, *H0, *DH;
  float *DP, *DR;
  long batch, hidden;
  AlignedBuffer direct;  // dh (1 - u) of a step, added to the next phase's d_rec W to give dh_carry

  GruBackward(const float* A, const float* H, const float* H0, const float* DH, float* DP, float* DR, long batch,
              long hidden)
      : A(A), H(H), H0(H0), DH(DH), DP(DP), DR(DR), batch(batch), hidden(hidden), direct(batch * hidden) {}

  void start(long, long) {}
  void prefetch(long, long, long, long) const {}

  void finish(long p, float* dh_carry, long ldc) const {
    for (long b = 0; b < batch; ++b) {
      for (long j = p * kLanes; j < std::min((p + 1) * kLanes, hidden); ++j) {
        dh_carry[b * ldc + j] += direct.data[b * hidden + j];
      }
    }
  }

  void derivs(long t, long t_prev, long b, long j, int n, const float* dh_carry_row) const {
    const float* a_row = A + (t * batch + b) * 4 * hidden;
    float* dp_row = DP + (t * batch + b) * 3 * hidden;
    float* dr_row = DR + (t * batch + b) * 3 * hidden;
    const long row = (t * batch + b) * hidden;
    const float* h_prev = t_prev < 0 ? H0 + b * hidden : H + (t_prev * batch + b) * hidden;
    v16 r = load_n(a_row + j, n), u = load_n(a_row + hidden + j, n);
    v16 g = load_n(a_row + 2 * hidden + j, n), rho = load_n(a_row + 3 * hidden + j, n);
    v16 dh = load_n(DH + row + j, n) + load_n(dh_carry_row + j, n);
    v16 d_pre_g = dh * u * (1.0f - g * g);
    v16 d_pre_r = d_pre_g * rho * r * (1.0f - r);
    v16 d_pre_u = dh * (g - load_n(h_prev + j, n)) * u * (1.0f - u);
    store_n(dp_row + j, d_pre_r, n);
    store_n(dp_row + hidden + j, d_pre_u, n);
    store_n(dp_row + 2 * hidden + j, d_pre_g, n);
    store_n(dr_row + j, d_pre_r, n);
    store_n(dr_row + hidden + j, d_pre_u, n);
    store_n(dr_row + 2 * hidden + j, d_pre_g * r, n);
    store_n(direct.data + b * hidden + j, dh * (1.0f - u), n);
  }
};

ffi::Error GruForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 3> projected, ffi::Buffer<ffi::F32, 2> weight,
                          ffi::Buffer<ffi::F32, 1> recurrent_bias, ffi::Buffer<ffi::F32, 2> h0,
                          ffi::Buffer<ffi::F32, 1> bias, ffi::ResultBuffer<ffi::F32, 3> hs,
                          ffi::ResultBuffer<ffi::F32, 3> acts, int64_t reverse, int64_t bf16_products) {
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
  const GruForward cell{projected.typed_data(), bias.typed_data(), recurrent_bias.typed_data(), h0.typed_data(),
                        hs->typed_data(), acts->typed_data(), batch, hidden};
  return with_operands(bf16_products, hidden, [&](auto ops) {
    forward_loop<decltype(ops)>(pool, cell, steps, batch, hidden, weight.typed_data(), cell.H0, cell.H, reverse != 0);
  });
}

ffi::Error GruBackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 2> weight, ffi::Buffer<ffi::F32, 3> acts,
                           ffi::Buffer<ffi::F32, 3> hs, ffi::Buffer<ffi::F32, 2> h0, ffi::Buffer<ffi::F32, 3> d_hs,
                           ffi::Buffer<ffi::F32, 2> d_h_final, ffi::ResultBuffer<ffi::F32, 3> d_projected,
                           ffi::ResultBuffer<ffi::F32, 3> d_rec, ffi::ResultBuffer<ffi::F32, 2> d_h0,
                           int64_t reverse, int64_t bf16_products) {
  const long steps = hs.dimensions()[0], batch = hs.dimensions()[1], hidden = hs.dimensions()[2];
  if (auto error = check_shapes("GRU", 3, steps, batch, hidden, weight.dimensions()[0], weight.dimensions()[1]);
      error.failure()) {
    return error;
  }
  if (batch == 0) return ffi::Error::Success();
  GruBackward cell(acts.typed_data(), hs.typed_data(), h0.typed_data(), d_hs.typed_data(),
                   d_projected->typed_data(), d_rec->typed_data(), batch, hidden);
  return with_operands(bf16_products, hidden, [&](auto ops) {
    backward_loop<decltype(ops)>(pool, cell, steps, batch, hidden, weight.typed_data(), d_h_final.typed_data(),
                                 cell.DR, d_h0->typed_data(), reverse != 0);
  });
}

}  // namespace

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
                                  .Attr<int64_t>("reverse")
                                  .Attr<int64_t>("bf16_products"));

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
                                  .Attr<int64_t>("reverse")
                                  .Attr<int64_t>("bf16_products"));

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
                                  .Attr<int64_t>("reverse")
                                  .Attr<int64_t>("bf16_products"));

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
                                  .Attr<int64_t>("reverse")
                                  .Attr<int64_t>("bf16_products"));

