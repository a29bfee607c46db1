// Device helpers shared by the decode kernels (tdt_loop.cu, tdt_cluster.cu): loads that
// bypass L1, the split grid barrier, 16-bit weight products from shared memory, and
// whole-warp argmaxes. cuda_loop.py hands this file to NVRTC as a header.

#pragma once

#ifndef MAX_ROWS  // rows of the batch (1, 2, 4 or 8): the machine's batch bucket
#define MAX_ROWS 4
#endif
#define THREADS 512
#define WARPS (THREADS / 32)

typedef unsigned short u16;
typedef long long i64;

__device__ __forceinline__ float load_l2(const float* p) {  // bypasses L1: other blocks wrote it
  float v;
  asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
  return v;
}

__device__ __forceinline__ float4 load4_l2(const float* p) {  // 16-byte aligned
  float4 v;
  asm volatile("ld.global.cg.v4.f32 {%0, %1, %2, %3}, [%4];"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p));
  return v;
}

// A grid barrier in two halves, so that a block can work on its own data in between: the
// block's threads meet, then one thread arrives with a release (the block's earlier stores,
// ordered before it by the block barrier, become visible to whoever acquires the counter)...
__device__ __forceinline__ void arrive(unsigned* counter) {
  __syncthreads();
  if (threadIdx.x == 0) {
#ifdef FENCED_BARRIER
    __threadfence();
    atomicAdd(counter, 1u);
#else
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" : : "l"(counter) : "memory");
#endif
  }
}

// ... and later spins with acquiring loads until `target` arrivals are in.
__device__ __forceinline__ void wait_for(unsigned* counter, unsigned target) {
  if (threadIdx.x == 0) {
    unsigned seen;
    do {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
    } while (seen < target);
  }
  __syncthreads();
}

__device__ __forceinline__ void grid_sync(unsigned* counter, unsigned target) {
  arrive(counter);
  wait_for(counter, target);
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
// K 16-bit weights in shared memory, x float32 rows of stride K in shared memory (K % 8 == 0),
// LANES lanes of a warp per output row.
template <int LANES>
__device__ void products_by(const u16* W, int R, int K, const float* x, unsigned rows, float* out) {
  constexpr int groups = THREADS / LANES;
  const int group = threadIdx.x / LANES, lane = threadIdx.x % LANES;
  for (int r0 = 0; r0 < R; r0 += groups) {  // every lane runs every round: whole-warp shuffles
    const int r = r0 + group;
    float acc[MAX_ROWS];
#pragma unroll
    for (int b = 0; b < MAX_ROWS; ++b) acc[b] = 0.f;
    if (r < R) {
      const uint4* w_row = reinterpret_cast<const uint4*>(W + (size_t)r * K);
#pragma unroll 4
      for (int c = lane; c < K / 8; c += LANES) {
        const uint4 w = w_row[c];
#pragma unroll
        for (int b = 0; b < MAX_ROWS; ++b)
          if (rows >> b & 1u) acc[b] += dot8(w, x + b * K + c * 8);
      }
    }
#pragma unroll
    for (int b = 0; b < MAX_ROWS; ++b)
      for (int off = LANES / 2; off > 0; off >>= 1) acc[b] += __shfl_xor_sync(0xffffffffu, acc[b], off);
    if (r < R && lane == 0) {
#pragma unroll
      for (int b = 0; b < MAX_ROWS; ++b)
        if (rows >> b & 1u) out[b * R + r] = acc[b];
    }
  }
}

// A whole warp per output row when there are few rows, else half or a quarter of a warp (more
// rows at once: fewer rounds).
__device__ __forceinline__ void products(const u16* W, int R, int K, const float* x, unsigned rows,
                                         float* out) {
  if (R <= WARPS)
    products_by<32>(W, R, K, x, rows, out);
  else if (R <= 2 * WARPS)
    products_by<16>(W, R, K, x, rows, out);
  else
    products_by<8>(W, R, K, x, rows, out);
}

// Float32 -> unsigned with the same order (for whole-warp max reductions).
__device__ __forceinline__ unsigned order_key(float v) {
  const unsigned u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ unsigned warp_max(unsigned v) {
#if __CUDA_ARCH__ >= 800
  unsigned m;
  asm volatile("redux.sync.max.u32 %0, %1, 0xffffffff;" : "=r"(m) : "r"(v));
  return m;
#else
  for (int off = 16; off > 0; off >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
#endif
}

__device__ __forceinline__ unsigned warp_min(unsigned v) {
#if __CUDA_ARCH__ >= 800
  unsigned m;
  asm volatile("redux.sync.min.u32 %0, %1, 0xffffffff;" : "=r"(m) : "r"(v));
  return m;
#else
  for (int off = 16; off > 0; off >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
#endif
}

// The first index of the largest key over the warp (and, from `best`, that key).
__device__ __forceinline__ unsigned warp_first_max(unsigned key, unsigned at, unsigned& best) {
  best = warp_max(key);
  return warp_min(key == best ? at : 0xffffffffu);
}

// For every active row b of `logits` (rows of stride N): the first index of the maximum of its
// n labels' logits (torch.argmax's choice among ties) and of its nd duration logits after them
// (nd <= THREADS), for the whole block in one pass; `scratch` holds MAX_ROWS * 4 * WARPS words.
// Every thread gets every answer.
__device__ __forceinline__ void select_rows(const float* logits, int N, int n, int nd, unsigned active,
                            unsigned* scratch, int* labels, int* indices) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int b = 0; b < MAX_ROWS; ++b) {
    if (!(active >> b & 1u)) continue;
    const float* p = logits + b * N;
    unsigned key = 0, at = 0xffffffffu, key_d = 0, at_d = 0xffffffffu;
    if (threadIdx.x < nd) key_d = order_key(load_l2(p + n + threadIdx.x)), at_d = threadIdx.x;
    for (int i0 = threadIdx.x; i0 < n; i0 += 4 * THREADS) {  // four loads in flight at a time
      float v[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = i0 + j * THREADS < n ? load_l2(p + i0 + j * THREADS) : 0.f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {  // a thread's indices rise: strict keeps the first
        const unsigned k = order_key(v[j]);
        if (i0 + j * THREADS < n && k > key) key = k, at = i0 + j * THREADS;
      }
    }
    unsigned best, best_d;
    at = warp_first_max(key, at, best);
    at_d = warp_first_max(key_d, at_d, best_d);
    if (lane == 0) {
      unsigned* mine = scratch + b * 4 * WARPS;
      mine[warp] = best, mine[WARPS + warp] = at;
      mine[2 * WARPS + warp] = best_d, mine[3 * WARPS + warp] = at_d;
    }
  }
  __syncthreads();
#pragma unroll
  for (int b = 0; b < MAX_ROWS; ++b) {
    if (!(active >> b & 1u)) continue;
    const unsigned* mine = scratch + b * 4 * WARPS;
    const bool in = lane < WARPS;
    unsigned best;
    const unsigned at = warp_first_max(in ? mine[lane] : 0, in ? mine[WARPS + lane] : 0xffffffffu, best);
    const unsigned at_d = warp_first_max(in ? mine[2 * WARPS + lane] : 0,
                                         in ? mine[3 * WARPS + lane] : 0xffffffffu, best);
    labels[b] = at == 0xffffffffu ? 0 : (int)at;
    indices[b] = at_d == 0xffffffffu ? 0 : (int)at_d;
  }  // (scratch is written again only after the next grid barrier)
}

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// The LSTM cell from its four gate pre-activations (i, f, g, o): updates c, returns h.
__device__ __forceinline__ float lstm_cell(const float gate[4], float* c) {
  *c = sigmoid(gate[1]) * *c + sigmoid(gate[0]) * tanhf(gate[2]);
  return sigmoid(gate[3]) * tanhf(*c);
}

// A block's start of a decode for its hidden units [u0, u0 + nu) (U per block, G = 4U gate
// rows per layer): every row's recurrent products and cell states from the start state, and
// the gate biases; shared memory rec [L, MAX_ROWS, G], cell [L, MAX_ROWS, U], bias [L, G].
__device__ __forceinline__ void load_start_state(const float* start_rec, const float* b_lstm,
                                                 const float* start_c, float* rec, float* cell,
                                                 float* bias, int L, int H, int U, int u0,
                                                 int nu) {
  const int G = 4 * U;
  for (int i = threadIdx.x; i < L * G; i += THREADS) {
    const int l = i / G, g = i % G / U, u = i % U;
    const float r = u < nu ? start_rec[(size_t)l * 4 * H + g * H + u0 + u] : 0.f;
    bias[i] = u < nu ? b_lstm[(size_t)l * 4 * H + g * H + u0 + u] : 0.f;
    for (int b = 0; b < MAX_ROWS; ++b) rec[(l * MAX_ROWS + b) * G + i % G] = r;
  }
  for (int i = threadIdx.x; i < L * U; i += THREADS) {
    const int l = i / U, u = i % U;
    for (int b = 0; b < MAX_ROWS; ++b)
      cell[(l * MAX_ROWS + b) * U + u] = u < nu ? start_c[l * H + u0 + u] : 0.f;
  }
}

// xs[b] = src[b] (K floats each, written by other blocks: read from L2) for the rows in
// `rows`; the caller synchronizes the block before reading xs.
__device__ __forceinline__ void load_rows_l2(float* xs, const float* src, int K, unsigned rows) {
#pragma unroll
  for (int b = 0; b < MAX_ROWS; ++b) {
    if (!(rows >> b & 1u)) continue;
    for (int k = threadIdx.x; k < K / 4; k += THREADS)
      reinterpret_cast<float4*>(xs + b * K)[k] = load4_l2(src + b * K + 4 * k);
  }
}

