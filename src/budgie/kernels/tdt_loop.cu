// TDT greedy decoding of up to MAX_ROWS utterances in one launch, every block keeping its
// share of the prediction network's and the joint's 16-bit weights in shared memory for the
// whole decode (cuda_loop.py explains why and how the weights are split; it compiles this file
// with NVRTC, so no header is included).
//
// A step, for the rows still inside their frames:
//   joint phase    every block: its output rows of relu(enc[row, frame] + pred[row]) @ W_out^T
//                  + b_out, into logits[step % 2]                               -> grid barrier
//   select         every block, redundantly: the argmaxes (label, duration) and the rows'
//                  integer state (time, count, on_frame, last_frame, steps) in registers; block
//                  0 records the step. No row emits: next step.
//   LSTM layer l   every block: the four gate rows of its hidden units for the emitting rows,
//                  the cell update (its units' c stays in its shared memory), the new h into
//                  the row's other h buffer                                       -> grid barrier
//   projection     every block: its rows of pred = W_pred @ h_top + b_pred          -> grid barrier
// Logits alternate between two buffers, so a block that starts the next step's joint phase
// cannot overwrite logits a slower block is still reading after a blank step.

#ifndef MAX_ROWS  // rows of the batch (1, 2 or 4): the machine's batch bucket
#define MAX_ROWS 4
#endif
#define THREADS 512
#define WARPS (THREADS / 32)
#define GROUP 16  // lanes that share one output row of a product
#define GROUPS (THREADS / GROUP)

// With -DPROFILE block 0's first thread adds up the SM clock cycles spent in each part of the
// loop (slots below) and writes them, and the steps taken, to `profile` at the end.
#ifdef PROFILE
#define MARK(slot)                                \
  if (p == 0 && tid == 0) {                       \
    const long long now = clock64();              \
    profile_cycles[slot] += now - profile_last;   \
    profile_last = now;                           \
  }
#else
#define MARK(slot)
#endif
#define PROFILE_SLOTS 10  // joint: load, product, barrier; select; LSTM: load, product,
                          // barrier; projection: work, barrier; loop control

typedef unsigned short u16;
typedef long long i64;

__device__ __forceinline__ float load_l2(const float* p) {  // bypasses L1: other blocks wrote it
  float v;
  asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
  return v;
}

// Grid-wide barrier number target / blocks. The block's threads meet, then one thread arrives
// with a release (its block's earlier stores, ordered before it by the block barrier, become
// visible to whoever acquires the counter) and spins with acquiring loads.
__device__ __forceinline__ void grid_sync(unsigned* counter, unsigned target) {
  __syncthreads();
  if (threadIdx.x == 0) {
#ifdef FENCED_BARRIER
    __threadfence();
    atomicAdd(counter, 1u);
#else
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" : : "l"(counter) : "memory");
#endif
    unsigned seen;
    do {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
    } while (seen < target);
  }
  __syncthreads();
}

__device__ __forceinline__ void widen2(unsigned pair, float& lo, float& hi) {
#ifdef WEIGHT_FP16
  asm("cvt.f32.f16 %0, %1;" : "=f"(lo) : "h"((u16)(pair & 0xffffu)));
  asm("cvt.f32.f16 %0, %1;" : "=f"(hi) : "h"((u16)(pair >> 16)));
#else  // bfloat16: the high half of a float32
  lo = __uint_as_float(pair << 16);
  hi = __uint_as_float(pair & 0xffff0000u);
#endif
}

__device__ __forceinline__ float dot8(uint4 w, const float* x) {
  float4 a = *reinterpret_cast<const float4*>(x);
  float4 b = *reinterpret_cast<const float4*>(x + 4);
  float w0, w1, w2, w3, w4, w5, w6, w7;
  widen2(w.x, w0, w1);
  widen2(w.y, w2, w3);
  widen2(w.z, w4, w5);
  widen2(w.w, w6, w7);
  return w0 * a.x + w1 * a.y + w2 * a.z + w3 * a.w + w4 * b.x + w5 * b.y + w6 * b.z + w7 * b.w;
}

// out[b * R + r] = W[r, :K] . x[b, :K] for the rows b in `rows` (a bit mask), W being R rows of
// K 16-bit weights in shared memory, x float32 rows of stride K in shared memory (K % 8 == 0).
__device__ void products(const u16* W, int R, int K, const float* x, unsigned rows, float* out) {
  const int group = threadIdx.x / GROUP, lane = threadIdx.x % GROUP;
  for (int r0 = 0; r0 < R; r0 += GROUPS) {  // every lane runs every round: whole-warp shuffles
    const int r = r0 + group;
    float acc[MAX_ROWS];
#pragma unroll
    for (int b = 0; b < MAX_ROWS; ++b) acc[b] = 0.f;
    if (r < R) {
      const uint4* w_row = reinterpret_cast<const uint4*>(W + (size_t)r * K);
#pragma unroll 4
      for (int c = lane; c < K / 8; c += GROUP) {
        const uint4 w = w_row[c];
#pragma unroll
        for (int b = 0; b < MAX_ROWS; ++b)
          if (rows >> b & 1u) acc[b] += dot8(w, x + b * K + c * 8);
      }
    }
#pragma unroll
    for (int b = 0; b < MAX_ROWS; ++b)
      for (int off = GROUP / 2; off > 0; off >>= 1) acc[b] += __shfl_xor_sync(0xffffffffu, acc[b], off);
    if (r < R && lane == 0) {
#pragma unroll
      for (int b = 0; b < MAX_ROWS; ++b)
        if (rows >> b & 1u) out[b * R + r] = acc[b];
    }
  }
}

__device__ __forceinline__ void keep_first_max(float& best, int& at, float v, int i) {
  if (v > best || (v == best && i < at)) best = v, at = i;
}

// The first index of the maximum (torch.argmax's choice among ties) of p[0..n) and of
// p[n..n + nd) (nd <= THREADS), for the whole block in one pass; `scratch` holds 4 * WARPS
// words. Every thread gets both answers.
__device__ void block_argmax2(const float* p, int n, int nd, float* scratch, int& label, int& index) {
  const float none = -__int_as_float(0x7f800000);
  float best = none, best_d = none;
  int at = 0x7fffffff, at_d = 0x7fffffff;
  if (threadIdx.x < nd) best_d = load_l2(p + n + threadIdx.x), at_d = threadIdx.x;
  for (int i = threadIdx.x; i < n; i += THREADS) {
    const float v = load_l2(p + i);
    if (v > best) best = v, at = i;  // a thread's indices rise: strict keeps the first
  }
  for (int off = 16; off > 0; off >>= 1) {
    keep_first_max(best, at, __shfl_xor_sync(0xffffffffu, best, off),
                   __shfl_xor_sync(0xffffffffu, at, off));
    keep_first_max(best_d, at_d, __shfl_xor_sync(0xffffffffu, best_d, off),
                   __shfl_xor_sync(0xffffffffu, at_d, off));
  }
  const int warp = threadIdx.x / 32;
  __syncthreads();  // scratch may still be read by the previous call
  if (threadIdx.x % 32 == 0) {
    scratch[warp] = best, scratch[WARPS + warp] = __int_as_float(at);
    scratch[2 * WARPS + warp] = best_d, scratch[3 * WARPS + warp] = __int_as_float(at_d);
  }
  __syncthreads();
  best = none, at = 0x7fffffff, best_d = none, at_d = 0x7fffffff;
  for (int w = 0; w < WARPS; ++w) {
    keep_first_max(best, at, scratch[w], __float_as_int(scratch[WARPS + w]));
    keep_first_max(best_d, at_d, scratch[2 * WARPS + w], __float_as_int(scratch[3 * WARPS + w]));
  }
  label = at == 0x7fffffff ? 0 : at;
  index = at_d == 0x7fffffff ? 0 : at_d;
}

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

extern "C" __global__ void __launch_bounds__(THREADS, 1) tdt_decode_loop(
    const float* __restrict__ enc,         // [B, T, J] the joint's encoder projections
    const i64* __restrict__ lengths,       // [B] frames per row
    const u16* __restrict__ packed,        // [blocks, block_elements] (cuda_loop.pack_weights)
    const float* __restrict__ b_lstm,      // [L, 4H] b_ih + b_hh
    const float* __restrict__ b_pred,      // [J]
    const float* __restrict__ b_out,       // [N]
    const float* __restrict__ embed,       // [labels, H]
    const i64* __restrict__ dur_table,     // [N - NL] the durations
    const float* __restrict__ start_pred,  // [J] the prediction after the start blank
    const float* __restrict__ start_h,     // [L, H]
    const float* __restrict__ start_c,     // [L, H]
    float* pred,                           // [MAX_ROWS, J] shared between blocks
    float* h_buf,                          // [2, L, MAX_ROWS, H] two h per row, alternating
    float* logits,                         // [2, MAX_ROWS, N] alternating per step
    i64* out, i64* count_out, i64* steps_out, i64* time_out, unsigned* counter,
    long long* profile,                    // [PROFILE_SLOTS + 1] with -DPROFILE, else unused
    int B, int T, int H, int J, int N, int NL, int L, int U, int RJ, int RN, int blank, int cap,
    int max_symbols) {
  extern __shared__ uint4 shared_words[];
  const int P = gridDim.x, p = blockIdx.x, tid = threadIdx.x;
  const int ND = N - NL;
  // Shared memory: this block's weights, then float32 scratch.
  const size_t lstm_elems = (size_t)8 * U * H, pred_elems = (size_t)RJ * H;
  const size_t weight_elems = L * lstm_elems + pred_elems + (size_t)RN * J;
  u16* weights = reinterpret_cast<u16*>(shared_words);
  const int x_stride = max(2 * H, J);
  float* xs = reinterpret_cast<float*>(shared_words + (weight_elems * 2 + 15) / 16);
  float* res = xs + MAX_ROWS * x_stride;  // products: [MAX_ROWS, max(4U, RJ, RN)]
  const int res_stride = max(4 * U, max(RJ, RN));
  float* cell = res + MAX_ROWS * res_stride;  // [L, MAX_ROWS, U] this block's units' c
  float* scratch = cell + L * MAX_ROWS * U;   // [4 * WARPS]
  {
    const uint4* src = reinterpret_cast<const uint4*>(packed + (size_t)p * weight_elems);
    for (size_t i = tid; i < weight_elems / 8; i += THREADS) shared_words[i] = src[i];
  }
  const u16* w_pred = weights + L * lstm_elems;
  const u16* w_out = w_pred + pred_elems;
  const int u0 = p * U, nu = max(0, min(U, H - u0));
  const int j0 = p * RJ, nj = max(0, min(RJ, J - j0));
  const int n0 = p * RN, nn = max(0, min(RN, N - n0));

  // Start state: each block writes its own units and prediction rows.
  for (int i = tid; i < L * MAX_ROWS * U; i += THREADS) {
    const int l = i / (MAX_ROWS * U), b = i / U % MAX_ROWS, u = i % U;
    if (b < B && u < nu) {
      cell[i] = start_c[l * H + u0 + u];
      h_buf[((size_t)l * MAX_ROWS + b) * H + u0 + u] = start_h[l * H + u0 + u];
    }
  }
  for (int i = tid; i < B * nj; i += THREADS) pred[(i / nj) * J + j0 + i % nj] = start_pred[j0 + i % nj];
  unsigned passed = 1;
  grid_sync(counter, passed * P);
#ifdef PROFILE
  long long profile_cycles[PROFILE_SLOTS] = {0}, profile_last = clock64(), profile_steps = 0;
#endif

  i64 frames[MAX_ROWS], time[MAX_ROWS], count[MAX_ROWS], steps[MAX_ROWS], on_frame[MAX_ROWS],
      last_frame[MAX_ROWS];
  int label[MAX_ROWS];
  unsigned parity = 0;  // bit b: which of row b's two h buffers holds its current h
  // Row b's h of layer l in its current (new = false) or next (new = true) buffer.
  auto h_of = [&](int l, int b, bool next) {
    const unsigned buffer = (parity >> b & 1u) ^ (next ? 1u : 0u);
    return h_buf + (((size_t)buffer * L + l) * MAX_ROWS + b) * H;
  };
#pragma unroll
  for (int b = 0; b < MAX_ROWS; ++b) {
    frames[b] = b < B ? lengths[b] : 0;
    time[b] = count[b] = steps[b] = on_frame[b] = 0;
    last_frame[b] = -1;
    label[b] = 0;
  }
  for (int step = 0;; ++step) {
    unsigned active = 0;
#pragma unroll
    for (int b = 0; b < MAX_ROWS; ++b)
      if (time[b] < frames[b]) active |= 1u << b;
    if (!active) break;
#ifdef PROFILE
    profile_steps += 1;
#endif
    MARK(9);

    // Joint phase.
    float* step_logits = logits + (size_t)(step & 1) * MAX_ROWS * N;
#pragma unroll
    for (int b = 0; b < MAX_ROWS; ++b) {
      if (!(active >> b & 1u)) continue;
      const i64 frame = min(time[b], max(frames[b] - 1, (i64)0));
      const float* e = enc + ((size_t)b * T + frame) * J;
      for (int k = tid; k < J; k += THREADS) xs[b * J + k] = fmaxf(e[k] + load_l2(pred + b * J + k), 0.f);
    }
    __syncthreads();
    MARK(0);
    products(w_out, nn, J, xs, active, res);
    __syncthreads();
    for (int i = tid; i < MAX_ROWS * nn; i += THREADS) {
      const int b = i / nn, r = i % nn;
      if (active >> b & 1u) step_logits[b * N + n0 + r] = res[b * nn + r] + b_out[n0 + r];
    }
    MARK(1);
    grid_sync(counter, ++passed * P);
    MARK(2);

    // Select: the same choices and integer state in every thread of every block.
    unsigned emit = 0;
#pragma unroll
    for (int b = 0; b < MAX_ROWS; ++b) {
      if (!(active >> b & 1u)) continue;
      const float* row = step_logits + b * N;
      int chosen, index;
      block_argmax2(row, NL, ND, scratch, chosen, index);
      i64 dur = dur_table[index];
      if (chosen == blank && dur == 0) dur = 1;
      const bool emits = chosen != blank;
      if (p == 0 && tid == 0) {
        i64* slot = out + ((size_t)b * cap + min(count[b], (i64)cap - 1)) * 3;
        slot[0] = chosen, slot[1] = time[b], slot[2] = dur;
      }
      steps[b] += 1;
      if (emits) {
        count[b] += 1;
        on_frame[b] = last_frame[b] == time[b] ? on_frame[b] + 1 : 1;
        last_frame[b] = time[b];
        label[b] = chosen;
        emit |= 1u << b;
      }
      const i64 new_time = time[b] + dur;
      const bool capped = emits && new_time < frames[b] && on_frame[b] >= max_symbols &&
                          last_frame[b] == new_time;
      time[b] = new_time + (capped ? 1 : 0);
    }
    MARK(3);
    if (!emit) continue;

    // LSTM layers, then the projection, for the emitting rows.
    for (int l = 0; l < L; ++l) {
#pragma unroll
      for (int b = 0; b < MAX_ROWS; ++b) {
        if (!(emit >> b & 1u)) continue;
        const float* h_old = h_of(l, b, false);
        if (l == 0) {  // the input: the label's embedding, or the layer below's new h
          const float* x = embed + (size_t)label[b] * H;
          for (int k = tid; k < H; k += THREADS) xs[b * 2 * H + k] = x[k];
        } else {
          const float* x = h_of(l - 1, b, true);
          for (int k = tid; k < H; k += THREADS) xs[b * 2 * H + k] = load_l2(x + k);
        }
        for (int k = tid; k < H; k += THREADS) xs[b * 2 * H + H + k] = load_l2(h_old + k);
      }
      __syncthreads();
      MARK(4);
      products(weights + l * lstm_elems, 4 * U, 2 * H, xs, emit, res);
      __syncthreads();
      for (int i = tid; i < MAX_ROWS * nu; i += THREADS) {
        const int b = i / nu, u = i % nu;
        if (!(emit >> b & 1u)) continue;
        const float* gates = res + b * 4 * U;
        const float* bias = b_lstm + (size_t)l * 4 * H + u0 + u;
        const float in = sigmoid(gates[u] + bias[0]);
        const float forget = sigmoid(gates[U + u] + bias[H]);
        const float g = tanhf(gates[2 * U + u] + bias[2 * H]);
        const float o = sigmoid(gates[3 * U + u] + bias[3 * H]);
        float* c = cell + (l * MAX_ROWS + b) * U + u;
        *c = forget * *c + in * g;
        h_of(l, b, true)[u0 + u] = o * tanhf(*c);
      }
      MARK(5);
      grid_sync(counter, ++passed * P);
      MARK(6);
    }
#pragma unroll
    for (int b = 0; b < MAX_ROWS; ++b) {
      if (!(emit >> b & 1u)) continue;
      const float* top = h_of(L - 1, b, true);
      for (int k = tid; k < H; k += THREADS) xs[b * H + k] = load_l2(top + k);
    }
    __syncthreads();
    products(w_pred, nj, H, xs, emit, res);
    __syncthreads();
    for (int i = tid; i < MAX_ROWS * nj; i += THREADS) {
      const int b = i / nj, r = i % nj;
      if (emit >> b & 1u) pred[b * J + j0 + r] = res[b * nj + r] + b_pred[j0 + r];
    }
    MARK(7);
    grid_sync(counter, ++passed * P);
    MARK(8);
    parity ^= emit;
  }
#ifdef PROFILE
  if (p == 0 && tid == 0) {
    for (int i = 0; i < PROFILE_SLOTS; ++i) profile[i] = profile_cycles[i];
    profile[PROFILE_SLOTS] = profile_steps;
  }
#endif
  if (p == 0 && tid == 0) {
#pragma unroll
    for (int b = 0; b < MAX_ROWS; ++b)
      if (b < B) count_out[b] = count[b], steps_out[b] = steps[b], time_out[b] = time[b];
  }
}
