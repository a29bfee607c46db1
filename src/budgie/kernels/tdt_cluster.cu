// TDT greedy decoding of up to MAX_ROWS utterances in one launch on a GPU with thread-block
// clusters (Hopper on): the joint lives on the first cluster of CLUSTER blocks, its weights in
// their registers; the prediction network on the other blocks, their weights in shared memory
// as in tdt_loop.cu (cuda_cluster.py explains the split; it compiles this file with NVRTC,
// handing it tdt_common.cuh).
//
// Why: in tdt_loop.cu every block takes part in every step, so a blank step (most steps of
// speech) costs a grid-wide barrier plus every block re-reading all logits (~3.9 us on an
// H100). Here a blank step stays inside the joint's cluster: hardware cluster barriers and
// reads of the other blocks' shared memory (DSMEM), no global round trip. W_out (1.3 MB for
// parakeet) is held in registers (~83 KB per block over 16 blocks): read from shared memory,
// a block's share took ~3.8 us per step (shared memory's bandwidth, 128 B per clock).
//
// Joint blocks (cluster 0), every step, for the rows still inside their frames:
//   xs = relu(enc[row, frame] + pred[row]) (pred kept in shared memory), this block's RN
//   output rows of xs @ W_out^T + b_out, each warp's best label and duration per row, then
//   the block's (candidates, alternating between two buffers by step)   -> cluster barrier
//   every block: the best of the CLUSTER candidates (read from their shared memory), then the
//   rows' integer state; block 0 records the step. A row that emits: block 0 publishes the
//   emission (labels, row mask, then the emission count with a release), and before its next
//   joint every joint block waits until the prediction blocks have made the new pred.
// Prediction blocks, for each emission (they sleep on the emission count otherwise):
//   LSTM layer 0 from the label table (W_ih0 @ embedding) + rec0 + bias      -> barrier
//   LSTM layer l from W_ih_l @ h_{l-1} + rec_l                                -> barrier
//   projection: pred = W_pred @ h_top + b_pred                                -> arrival
// (rec_l = W_hh_l @ h_l is computed while waiting at a barrier, as in tdt_loop.cu.) The
// barriers count the prediction blocks' arrivals only: L + 1 per emission, so the joint knows
// pred of emission e is complete when the counter reaches e * (L + 1) * PL.

#include "tdt_common.cuh"

#ifndef CLUSTER  // blocks in the joint's cluster (16: a non-portable size, Hopper allows it)
#define CLUSTER 16
#endif
#ifndef JOINT_ROWS_PER_WARP  // ceil(RN / WARPS): W_out rows a joint warp computes
#define JOINT_ROWS_PER_WARP 5
#endif
#ifndef JOINT_REGISTER_ROWS  // how many of them it holds in registers (the rest in shared
#define JOINT_REGISTER_ROWS 3  // memory: more would spill, the step's other work needing ~90)
#endif
#ifndef JOINT_GROUPS  // ceil(J / 128): float4 column groups per lane
#define JOINT_GROUPS 5
#endif
#define DONE 0x80000000u  // in the emission word: the joint has finished

// With -DPROFILE joint block 0's first thread adds up the SM clock cycles spent in each part of
// a step (slots below) and writes them, and the steps taken, to `profile` at the end.
#ifdef PROFILE
#define MARK(slot)                                        \
  if (rank == 0 && tid == 0) {                            \
    const long long now = clock64();                      \
    profile_cycles[slot] += (unsigned)(now - profile_last); \
    profile_last = now;                                   \
  }
#else
#define MARK(slot)
#endif
#define PROFILE_SLOTS 5  // wait for pred and its load (and the last step's publishing); joint
                         // input; products and the warps' candidates; the block's candidates
                         // and the cluster barrier; select from the blocks' candidates and the
                         // rows' states

__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;"
               :
               :
               : "memory");
}

__device__ __forceinline__ unsigned long long load_acquire64(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void store_release64(unsigned long long* p, unsigned long long v) {
  asm volatile("st.release.gpu.global.u64 [%0], %1;" : : "l"(p), "l"(v) : "memory");
}

// The emission word: the emissions published so far (DONE added at the end), and above them
// the emitting row's label when there is one row, else the emitting rows' mask (their labels
// then in `emitted`), so that at batch 1 the prediction blocks need no second read.
__device__ __forceinline__ unsigned long long emission_word(unsigned count, unsigned payload) {
  return (unsigned long long)payload << 32 | count;
}

struct Params {
  const float* enc;         // [B, T, J] the joint's encoder projections
  const i64* lengths;       // [B] frames per row
  const u16* packed;        // [PL, block_elements] prediction blocks' weights
  const u16* packed_joint;  // [CLUSTER, RN * J] W_out's rows per joint block
  const float* b_lstm;      // [L, 4H] b_ih + b_hh
  const float* b_pred;      // [J]
  const float* b_out;       // [N]
  const float* table;       // [labels, 4H] W_ih0 @ embedding per label
  const i64* dur_table;     // [N - NL] the durations
  const float* start_pred;  // [J] the prediction after the start blank
  const float* start_rec;   // [L, 4H] W_hh_l @ h_l of that start state
  const float* start_c;     // [L, H] and its cell states
  float* pred;              // [MAX_ROWS, J] made by the prediction blocks
  float* h_new;             // [L, MAX_ROWS, H] the emitting rows' new h
  int* emitted;             // [MAX_ROWS] the last emission's labels (MAX_ROWS > 1)
  i64 *out, *count_out, *steps_out, *time_out;
  unsigned* sync;           // [4] prediction blocks' arrivals, padding, the emission word
  long long* profile;       // [PROFILE_SLOTS + 1] with -DPROFILE, else unused
  int B, T, H, J, N, NL, L, U, RJ, RN, PL, blank, cap, max_symbols;
};

// A 16-bit weight quad (uint2) times a float4.
__device__ __forceinline__ float dot4(uint2 w, float4 x) {
  float w0, w1, w2, w3;
  widen2(w.x, w0, w1);
  widen2(w.y, w2, w3);
  return w0 * x.x + w1 * x.y + w2 * x.z + w3 * x.w;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// The 16 bytes at the same shared-memory offset as `local` in cluster block `rank`.
__device__ __forceinline__ uint4 load_remote4(const unsigned* local, unsigned rank) {
  unsigned addr, remote;
  uint4 v;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(addr) : "l"(local));
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(addr), "r"(rank));
  asm volatile("ld.shared::cluster.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(remote)
               : "memory");
  return v;
}

// A row's integer state, in the joint blocks' shared memory (every block keeps the same).
struct RowState {
  int frames, time, count, steps, on_frame, last_frame, label, emits;
};

__device__ __forceinline__ unsigned long long* emission_slot(const Params& a) {
  return reinterpret_cast<unsigned long long*>(a.sync + 2);
}

__device__ void joint_blocks(const Params& a, unsigned* shared_words) {
  const int rank = blockIdx.x, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int J = a.J, RN = a.RN, ND = a.N - a.NL, J4 = a.J / 4;
  const int n0 = rank * RN, nn = max(0, min(RN, a.N - n0));
  // Warp w computes this block's rows w, w + WARPS, ... of W_out (JOINT_ROWS_PER_WARP of
  // them), lane l their float4 groups of columns l, l + 32, ... (up to JOINT_GROUPS): a row's
  // product is a warp sum, and xs is read once per row of the batch. The first
  // JOINT_REGISTER_ROWS rows' weights are held in registers, the others' in shared memory
  // (in the same per-lane order, so that a warp's read is contiguous). Shared memory: those
  // weights, float32 pred and xs [MAX_ROWS, J], each warp's candidates [MAX_ROWS, 4, WARPS],
  // the block's [2, MAX_ROWS, 4] (alternating by step), the rows' states [MAX_ROWS], the
  // biases [RN] and the durations [ND].
  constexpr int SHARED_ROWS = JOINT_ROWS_PER_WARP - JOINT_REGISTER_ROWS;
  uint2* w_shared = reinterpret_cast<uint2*>(shared_words);
  float* pred_s = reinterpret_cast<float*>(w_shared + SHARED_ROWS * WARPS * JOINT_GROUPS * 32);
  float* xs = pred_s + MAX_ROWS * J;
  unsigned* warp_best = reinterpret_cast<unsigned*>(xs + MAX_ROWS * J);
  unsigned* candidates = warp_best + MAX_ROWS * 4 * WARPS;
  RowState* rows = reinterpret_cast<RowState*>(candidates + 2 * MAX_ROWS * 4);
  float* bias = reinterpret_cast<float*>(rows + MAX_ROWS);
  int* durations = reinterpret_cast<int*>(bias + RN);
  uint2 w[JOINT_REGISTER_ROWS][JOINT_GROUPS];
  auto shared_weights = [&](int i, int k) -> uint2& {  // row i >= JOINT_REGISTER_ROWS
    return w_shared[(((i - JOINT_REGISTER_ROWS) * WARPS + warp) * JOINT_GROUPS + k) * 32 + lane];
  };
  {
    const u16* mine = a.packed_joint + (size_t)rank * RN * J;
#pragma unroll
    for (int i = 0; i < JOINT_ROWS_PER_WARP; ++i) {
      const int r = warp + WARPS * i;
#pragma unroll
      for (int k = 0; k < JOINT_GROUPS; ++k) {
        const int g = lane + 32 * k;
        const uint2 v = r < nn && g < J4 ? reinterpret_cast<const uint2*>(mine + (size_t)r * J)[g]
                                         : make_uint2(0u, 0u);
        if (i < JOINT_REGISTER_ROWS)
          w[i][k] = v;
        else
          shared_weights(i, k) = v;
      }
    }
  }
  for (int r = tid; r < nn; r += THREADS) bias[r] = a.b_out[n0 + r];
  for (int d = tid; d < ND; d += THREADS) durations[d] = (int)a.dur_table[d];
  for (int i = tid; i < MAX_ROWS * J; i += THREADS) pred_s[i] = a.start_pred[i % J];
  if (tid < MAX_ROWS) {
    RowState start = {tid < a.B ? (int)a.lengths[tid] : 0, 0, 0, 0, 0, -1, 0, 0};
    rows[tid] = start;
  }
#ifdef PROFILE
  unsigned profile_cycles[PROFILE_SLOTS] = {0}, profile_steps = 0;  // (32 bits: fewer registers)
  long long profile_last = clock64();
#endif
  unsigned emissions = 0, pending = 0;  // emissions published; rows whose new pred is due
  for (int step = 0;; ++step) {
    __syncthreads();  // the rows' states of the last step
    unsigned active = 0, emit = 0;
#pragma unroll
    for (int b = 0; b < MAX_ROWS; ++b) {
      if (rows[b].time < rows[b].frames) active |= 1u << b;
      if (step > 0 && rows[b].emits) emit |= 1u << b;
    }
    if (emit) {  // the last step's emissions: published by block 0, due before this joint
      emissions += 1;
      pending = emit;
      if (rank == 0 && tid == 0) {
#pragma unroll
        for (int b = 0; b < MAX_ROWS; ++b)
          if (MAX_ROWS > 1 && emit >> b & 1u) a.emitted[b] = rows[b].label;
        const unsigned payload = MAX_ROWS == 1 ? (unsigned)rows[0].label : emit;
        store_release64(emission_slot(a), emission_word(emissions, payload));
      }
    }
    if (!active) break;
#ifdef PROFILE
    profile_steps += 1;
#endif
    if (pending) {  // the prediction blocks' pred for the last emission
      wait_for(a.sync, emissions * (unsigned)(a.L + 1) * (unsigned)a.PL);
      load_rows_l2(pred_s, a.pred, J, pending);
      pending = 0;
      __syncthreads();
    }
    MARK(0);
#pragma unroll
    for (int b = 0; b < MAX_ROWS; ++b) {
      if (!(active >> b & 1u)) continue;
      const int frame = min(rows[b].time, max(rows[b].frames - 1, 0));
      const float4* e = reinterpret_cast<const float4*>(a.enc + ((size_t)b * a.T + frame) * J);
      for (int k = tid; k < J4; k += THREADS) {
        const float4 x = e[k], q = reinterpret_cast<const float4*>(pred_s + b * J)[k];
        float4 z;
        z.x = fmaxf(x.x + q.x, 0.f), z.y = fmaxf(x.y + q.y, 0.f);
        z.z = fmaxf(x.z + q.z, 0.f), z.w = fmaxf(x.w + q.w, 0.f);
        reinterpret_cast<float4*>(xs + b * J)[k] = z;
      }
    }
    __syncthreads();
    MARK(1);
    // Each warp's rows for every active batch row, and its best label and duration among them
    // (rows rise with i: strict keeps the first index of a tie).
#pragma unroll
    for (int b = 0; b < MAX_ROWS; ++b) {
      if (!(active >> b & 1u)) continue;
      float acc[JOINT_ROWS_PER_WARP];
#pragma unroll
      for (int i = 0; i < JOINT_ROWS_PER_WARP; ++i) acc[i] = 0.f;
#pragma unroll
      for (int k = 0; k < JOINT_GROUPS; ++k) {
        const int g = lane + 32 * k;
        const float4 x = g < J4 ? reinterpret_cast<const float4*>(xs + b * J)[g]
                                : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int i = 0; i < JOINT_ROWS_PER_WARP; ++i)
          acc[i] += dot4(i < JOINT_REGISTER_ROWS ? w[i][k] : shared_weights(i, k), x);
      }
      unsigned key = 0, at = 0xffffffffu, key_d = 0, at_d = 0xffffffffu;
#pragma unroll
      for (int i = 0; i < JOINT_ROWS_PER_WARP; ++i) {
        const int r = warp + WARPS * i, n = n0 + r;
        const float sum = warp_sum(acc[i]);
        if (r >= nn) continue;
        const unsigned k = order_key(sum + bias[r]);
        if (n < a.NL) {
          if (k > key) key = k, at = n;
        } else if (k > key_d) {
          key_d = k, at_d = n - a.NL;
        }
      }
      if (lane == 0) {
        unsigned* mine = warp_best + b * 4 * WARPS;
        mine[warp] = key, mine[WARPS + warp] = at;
        mine[2 * WARPS + warp] = key_d, mine[3 * WARPS + warp] = at_d;
      }
    }
    __syncthreads();
    MARK(2);
    // The block's candidates (one warp per batch row), then every block's.
    unsigned* now = candidates + (step & 1) * MAX_ROWS * 4;
    const bool mine_row = warp < MAX_ROWS && (active >> warp & 1u);
    if (mine_row) {
      const unsigned* mine = warp_best + warp * 4 * WARPS;
      const bool in = lane < WARPS;
      unsigned best, best_d;
      const unsigned at = warp_first_max(in ? mine[lane] : 0u, in ? mine[WARPS + lane] : ~0u, best);
      const unsigned at_d =
          warp_first_max(in ? mine[2 * WARPS + lane] : 0u, in ? mine[3 * WARPS + lane] : ~0u, best_d);
      if (lane == 0) reinterpret_cast<uint4*>(now)[warp] = make_uint4(best, at, best_d, at_d);
    }
    cluster_sync();  // every block's candidates are in
    MARK(3);
    if (mine_row) {  // warp b: row b's choice, then its state (lane 0)
      const uint4 c = lane < CLUSTER ? load_remote4(now + warp * 4, lane)
                                     : make_uint4(0u, ~0u, 0u, ~0u);
      unsigned best;
      const unsigned at = warp_first_max(c.x, c.y, best);
      const unsigned at_d = warp_first_max(c.z, c.w, best);
      if (lane == 0) {
        const int chosen = at == 0xffffffffu ? 0 : (int)at;
        int dur = durations[at_d == 0xffffffffu || (int)at_d >= ND ? 0 : (int)at_d];
        if (chosen == a.blank && dur == 0) dur = 1;
        RowState row = rows[warp];
        if (rank == 0) {
          i64* slot = a.out + ((size_t)warp * a.cap + min(row.count, a.cap - 1)) * 3;
          slot[0] = chosen, slot[1] = row.time, slot[2] = dur;
        }
        row.steps += 1;
        row.emits = chosen != a.blank;
        if (row.emits) {
          row.count += 1;
          row.on_frame = row.last_frame == row.time ? row.on_frame + 1 : 1;
          row.last_frame = row.time;
          row.label = chosen;
        }
        const int new_time = row.time + dur;
        const bool capped = row.emits && new_time < row.frames &&
                            row.on_frame >= a.max_symbols && row.last_frame == new_time;
        row.time = new_time + (capped ? 1 : 0);
        rows[warp] = row;
      }
    } else if (warp < MAX_ROWS && lane == 0) {
      rows[warp].emits = 0;
    }
    MARK(4);
  }
  if (rank == 0 && tid == 0) {
    store_release64(emission_slot(a), emission_word(emissions | DONE, 0u));
    for (int b = 0; b < a.B; ++b)
      a.count_out[b] = rows[b].count, a.steps_out[b] = rows[b].steps, a.time_out[b] = rows[b].time;
#ifdef PROFILE
    for (int i = 0; i < PROFILE_SLOTS; ++i) a.profile[i] = profile_cycles[i];
    a.profile[PROFILE_SLOTS] = profile_steps;
#endif
  }
  cluster_sync();  // no block leaves while another may still read its candidates
}

__device__ void prediction_blocks(const Params& a, unsigned* shared_words) {
  const int q = blockIdx.x - CLUSTER, tid = threadIdx.x;
  if (q >= a.PL) return;  // a block of the last cluster without units
  const int H = a.H, J = a.J, L = a.L, U = a.U, RJ = a.RJ, G = 4 * U, PL = a.PL;
  // Shared memory: this block's weights (per layer W_ih_l's G rows but for layer 0, then
  // W_hh_l's; W_pred's RJ rows), then float32 inputs [MAX_ROWS, H], products [MAX_ROWS,
  // max(G, RJ)], recurrent terms [L, MAX_ROWS, G], its units' c [L, MAX_ROWS, U], biases
  // [L, G] + [RJ], then the emission being made (labels and row mask).
  const size_t gate_elems = (size_t)G * H, pred_elems = (size_t)RJ * H;
  const size_t weight_elems = (2 * L - 1) * gate_elems + pred_elems;
  const u16* weights = reinterpret_cast<const u16*>(shared_words);
  const u16* w_pred = weights + (2 * L - 1) * gate_elems;
  float* xs = reinterpret_cast<float*>(shared_words + (weight_elems * 2 + 15) / 16 * 4);
  float* res = xs + MAX_ROWS * H;
  float* rec = res + MAX_ROWS * max(G, RJ);
  float* cell = rec + L * MAX_ROWS * G;
  float* bias = cell + L * MAX_ROWS * U;
  float* bias_pred = bias + L * G;
  int* emission = reinterpret_cast<int*>(bias_pred + RJ);  // [MAX_ROWS labels, mask, word]
  const int u0 = q * U, nu = max(0, min(U, H - u0));
  const int j0 = q * RJ, nj = max(0, min(RJ, J - j0));
  auto w_ih = [&](int l) { return weights + (size_t)(2 * l - 1) * gate_elems; };  // l >= 1
  auto w_hh = [&](int l) { return weights + (size_t)(l == 0 ? 0 : 2 * l) * gate_elems; };
  {
    const uint4* src = reinterpret_cast<const uint4*>(a.packed + (size_t)q * weight_elems);
    uint4* dst = reinterpret_cast<uint4*>(shared_words);
#pragma unroll 8
    for (size_t i = tid; i < weight_elems / 8; i += THREADS) dst[i] = src[i];
  }
  load_start_state(a.start_rec, a.b_lstm, a.start_c, rec, cell, bias, L, H, U, u0, nu);
  for (int r = tid; r < nj; r += THREADS) bias_pred[r] = a.b_pred[j0 + r];
  for (int i = tid; i < a.B * nj; i += THREADS)
    a.pred[(i / nj) * J + j0 + i % nj] = a.start_pred[j0 + i % nj];

  // The cell update of this block's units of layer l for the emitting rows, from the gates'
  // input products in res ([b, G]; from the label table for layer 0) plus rec_l and biases.
  auto cell_update = [&](int l, unsigned emit, bool from_res) {
    for (int i = tid; i < MAX_ROWS * nu; i += THREADS) {
      const int b = i / nu, u = i % nu;
      if (!(emit >> b & 1u)) continue;
      float gate[4];
#pragma unroll
      for (int g = 0; g < 4; ++g) {
        const int r = g * U + u;
        const float x = from_res ? res[b * G + r]
                                 : a.table[(size_t)emission[b] * 4 * H + g * H + u0 + u];
        gate[g] = x + rec[(l * MAX_ROWS + b) * G + r] + bias[l * G + r];
      }
      a.h_new[((size_t)l * MAX_ROWS + b) * H + u0 + u] =
          lstm_cell(gate, cell + (l * MAX_ROWS + b) * U + u);
    }
  };
  for (unsigned e = 1;; ++e) {
    if (tid == 0) {  // emission e, or the end
      unsigned long long word;
      unsigned count;
      do {
        word = load_acquire64(emission_slot(a));
        count = (unsigned)word;
      } while ((count & ~DONE) < e && !(count & DONE));
      const bool made = (count & ~DONE) >= e;
      const unsigned payload = (unsigned)(word >> 32);
      emission[MAX_ROWS + 1] = made;
      if (made && MAX_ROWS == 1) {
        emission[0] = (int)payload, emission[MAX_ROWS] = 1;
      } else if (made) {
        emission[MAX_ROWS] = (int)payload;
        for (int b = 0; b < MAX_ROWS; ++b)
          if (payload >> b & 1u) emission[b] = __ldcg(a.emitted + b);
      }
    }
    __syncthreads();
    if (!emission[MAX_ROWS + 1]) break;
    const unsigned emit = (unsigned)emission[MAX_ROWS];
    const unsigned base = (e - 1) * (unsigned)(L + 1) * (unsigned)PL;
    cell_update(0, emit, false);
    arrive(a.sync);
    for (int l = 1; l <= L; ++l) {
      wait_for(a.sync, base + (unsigned)(l * PL));
      load_rows_l2(xs, a.h_new + (size_t)(l - 1) * MAX_ROWS * H, H, emit);
      __syncthreads();
      if (l < L) {
        products(w_ih(l), G, H, xs, emit, res);
        __syncthreads();
        cell_update(l, emit, true);
      } else {
        products(w_pred, nj, H, xs, emit, res);
        __syncthreads();
        for (int i = tid; i < MAX_ROWS * nj; i += THREADS) {
          const int b = i / nj, r = i % nj;
          if (emit >> b & 1u) a.pred[b * J + j0 + r] = res[b * nj + r] + bias_pred[r];
        }
      }
      arrive(a.sync);
      products(w_hh(l - 1), G, H, xs, emit, rec + (l - 1) * MAX_ROWS * G);
    }
  }
}

extern "C" __global__ void __launch_bounds__(THREADS, 1) tdt_decode_cluster(const Params a) {
  extern __shared__ uint4 shared_uint4[];
  unsigned* shared_words = reinterpret_cast<unsigned*>(shared_uint4);
  if (blockIdx.x < CLUSTER)
    joint_blocks(a, shared_words);
  else
    prediction_blocks(a, shared_words);
}
