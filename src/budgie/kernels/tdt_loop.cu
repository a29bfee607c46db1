// TDT greedy decoding of up to MAX_ROWS utterances in one launch, every block keeping its
// share of the prediction network's and the joint's 16-bit weights in shared memory for the
// whole decode (cuda_loop.py explains why and how the weights are split; it compiles this file
// with NVRTC, handing it tdt_common.cuh, the helpers it shares with tdt_cluster.cu).
//
// A step, for the rows still inside their frames:
//   joint phase    every block: its output rows of relu(enc[row, frame] + pred[row]) @ W_out^T
//                  + b_out, into logits[step % 2]                               -> grid barrier
//   select         every block, redundantly: the argmaxes (label, duration) and the rows'
//                  integer state (time, count, on_frame, last_frame, steps) in registers; block
//                  0 records the step. No row emits: next step.
//   LSTM layer 0   every block, for its hidden units of the emitting rows: the gates are
//                  table[label] (W_ih0 @ embedding, per label) + rec0 + bias, then the cell
//                  update (its units' c stays in its shared memory), h0 into memory -> barrier
//   LSTM layer l   the same with W_ih_l @ h_{l-1} (read from memory) + rec_l    -> barrier
//   projection     its rows of pred = W_pred @ h_top + b_pred                    -> barrier
// rec_l = W_hh_l @ h_l is the recurrent half of layer l's gates for the row's next emission:
// it only changes when h_l does, so it is computed from the new h_l (already in shared memory
// as the next phase's input) while the block waits at that phase's barrier, off the step's
// critical path. Logits alternate between two buffers, so a block that starts the next step's
// joint phase cannot overwrite logits a slower block is still reading after a blank step.

#include "tdt_common.cuh"

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
#define PROFILE_SLOTS 10  // joint: load, product, barrier; select; layer 0; waits after
                          // an emission's phases; their input loads; their products and
                          // cells; the recurrent products; loop control

extern "C" __global__ void __launch_bounds__(THREADS, 1) tdt_decode_loop(
    const float* __restrict__ enc,         // [B, T, J] the joint's encoder projections
    const i64* __restrict__ lengths,       // [B] frames per row
    const u16* __restrict__ packed,        // [blocks, block_elements] (cuda_loop.pack_weights)
    const float* __restrict__ b_lstm,      // [L, 4H] b_ih + b_hh
    const float* __restrict__ b_pred,      // [J]
    const float* __restrict__ b_out,       // [N]
    const float* __restrict__ table,       // [labels, 4H] W_ih0 @ embedding per label
    const i64* __restrict__ dur_table,     // [N - NL] the durations
    const float* __restrict__ start_pred,  // [J] the prediction after the start blank
    const float* __restrict__ start_rec,   // [L, 4H] W_hh_l @ h_l of that start state
    const float* __restrict__ start_c,     // [L, H] and its cell states
    float* pred,                           // [MAX_ROWS, J] shared between blocks
    float* h_new,                          // [L, MAX_ROWS, H] the emitting rows' new h
    float* logits,                         // [2, MAX_ROWS, N] alternating per step
    i64* out, i64* count_out, i64* steps_out, i64* time_out, unsigned* counter,
    long long* profile,                    // [PROFILE_SLOTS + 1] with -DPROFILE, else unused
    int B, int T, int H, int J, int N, int NL, int L, int U, int RJ, int RN, int blank, int cap,
    int max_symbols) {
  extern __shared__ uint4 shared_words[];
  const int P = gridDim.x, p = blockIdx.x, tid = threadIdx.x;
  const int ND = N - NL, G = 4 * U;  // G: this block's gate rows per layer
  // Shared memory: this block's weights (per layer W_ih_l's G rows but for layer 0, then
  // W_hh_l's; W_pred's RJ rows, W_out's RN rows), then float32 data.
  const size_t gate_elems = (size_t)G * H, pred_elems = (size_t)RJ * H;
  const size_t weight_elems = (2 * L - 1) * gate_elems + pred_elems + (size_t)RN * J;
  const u16* weights = reinterpret_cast<const u16*>(shared_words);
  const u16* w_pred = weights + (2 * L - 1) * gate_elems;
  const u16* w_out = w_pred + pred_elems;
  float* xs = reinterpret_cast<float*>(shared_words + (weight_elems * 2 + 15) / 16);
  float* res = xs + MAX_ROWS * max(H, J);     // products: [MAX_ROWS, max(G, RJ, RN)]
  float* rec = res + MAX_ROWS * max(G, max(RJ, RN));  // [L, MAX_ROWS, G]
  float* cell = rec + L * MAX_ROWS * G;       // [L, MAX_ROWS, U] this block's units' c
  float* bias = cell + L * MAX_ROWS * U;      // [L, G] gates, [RJ] projection, [RN] joint
  float* scratch = bias + L * G + RJ + RN;    // [MAX_ROWS, 4, WARPS] argmax
  const int u0 = p * U, nu = max(0, min(U, H - u0));
  const int j0 = p * RJ, nj = max(0, min(RJ, J - j0));
  const int n0 = p * RN, nn = max(0, min(RN, N - n0));
  auto w_ih = [&](int l) { return weights + (size_t)(2 * l - 1) * gate_elems; };  // l >= 1
  auto w_hh = [&](int l) { return weights + (size_t)(l == 0 ? 0 : 2 * l) * gate_elems; };
  {
    const uint4* src = reinterpret_cast<const uint4*>(packed + (size_t)p * weight_elems);
#pragma unroll 8  // several loads in flight per thread: this copy is on every decode's path
    for (size_t i = tid; i < weight_elems / 8; i += THREADS) shared_words[i] = src[i];
  }
  // Start state (the same for every row) and biases for this block's rows.
  load_start_state(start_rec, b_lstm, start_c, rec, cell, bias, L, H, U, u0, nu);
  float* bias_pred = bias + L * G;
  float* bias_out = bias_pred + RJ;
  for (int r = tid; r < nj; r += THREADS) bias_pred[r] = b_pred[j0 + r];
  for (int r = tid; r < nn; r += THREADS) bias_out[r] = b_out[n0 + r];
  for (int i = tid; i < B * nj; i += THREADS) pred[(i / nj) * J + j0 + i % nj] = start_pred[j0 + i % nj];
  unsigned passed = 1;
  grid_sync(counter, passed * P);
#ifdef PROFILE
  long long profile_cycles[PROFILE_SLOTS] = {0}, profile_last = clock64(), profile_steps = 0;
#endif

  // The rows' integer state in 32 bits (frames and counts are far below 2^31): fewer registers
  // (ptxas spills 4 instead of 12 bytes at 4 rows, 136 instead of 496 at 8) and faster steps
  // (benchmarks/results/gpu_decoder_micro_h100_2026-11-25_int32_state.json).
  int frames[MAX_ROWS], time[MAX_ROWS], count[MAX_ROWS], steps[MAX_ROWS], on_frame[MAX_ROWS],
      last_frame[MAX_ROWS];
  int label[MAX_ROWS];
#pragma unroll
  for (int b = 0; b < MAX_ROWS; ++b) {
    frames[b] = b < B ? (int)lengths[b] : 0;
    time[b] = count[b] = steps[b] = on_frame[b] = 0;
    last_frame[b] = -1;
    label[b] = 0;
  }
  auto label_of = [&](int b) {  // label[b] for a b known only at run time (no local memory)
    int value = label[0];
#pragma unroll
    for (int i = 1; i < MAX_ROWS; ++i)
      if (b == i) value = label[i];
    return value;
  };
  // The cell update of this block's units of layer l for the emitting rows, from the gates'
  // input products in res ([b, G]; none for layer 0) plus rec_l and the biases.
  auto cell_update = [&](int l, unsigned emit, bool from_res) {
    for (int i = tid; i < MAX_ROWS * nu; i += THREADS) {
      const int b = i / nu, u = i % nu;
      if (!(emit >> b & 1u)) continue;
      float gate[4];
#pragma unroll
      for (int g = 0; g < 4; ++g) {
        const int r = g * U + u;
        const float x = from_res ? res[b * G + r] : table[(size_t)label_of(b) * 4 * H + g * H + u0 + u];
        gate[g] = x + rec[(l * MAX_ROWS + b) * G + r] + bias[l * G + r];
      }
      h_new[((size_t)l * MAX_ROWS + b) * H + u0 + u] =
          lstm_cell(gate, cell + (l * MAX_ROWS + b) * U + u);
    }
  };
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
      const int frame = min(time[b], max(frames[b] - 1, 0));
      const float4* e = reinterpret_cast<const float4*>(enc + ((size_t)b * T + frame) * J);
      for (int k = tid; k < J / 4; k += THREADS) {
        const float4 a = e[k], q = load4_l2(pred + b * J + 4 * k);
        float4 z;
        z.x = fmaxf(a.x + q.x, 0.f), z.y = fmaxf(a.y + q.y, 0.f);
        z.z = fmaxf(a.z + q.z, 0.f), z.w = fmaxf(a.w + q.w, 0.f);
        reinterpret_cast<float4*>(xs + b * J)[k] = z;
      }
    }
    __syncthreads();
    MARK(0);
    products(w_out, nn, J, xs, active, res);
    __syncthreads();
    for (int i = tid; i < MAX_ROWS * nn; i += THREADS) {
      const int b = i / nn, r = i % nn;
      if (active >> b & 1u) step_logits[b * N + n0 + r] = res[b * nn + r] + bias_out[r];
    }
    MARK(1);
    grid_sync(counter, ++passed * P);
    MARK(2);

    // Select: the same choices and integer state in every thread of every block.
    unsigned emit = 0;
    int chosen_of[MAX_ROWS], index_of[MAX_ROWS];
    select_rows(step_logits, N, NL, ND, active, reinterpret_cast<unsigned*>(scratch), chosen_of,
                index_of);
#pragma unroll
    for (int b = 0; b < MAX_ROWS; ++b) {
      if (!(active >> b & 1u)) continue;
      const int chosen = chosen_of[b];
      int dur = (int)dur_table[index_of[b]];
      if (chosen == blank && dur == 0) dur = 1;
      const bool emits = chosen != blank;
      if (p == 0 && tid == 0) {
        i64* slot = out + ((size_t)b * cap + min(count[b], cap - 1)) * 3;
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
      const int new_time = time[b] + dur;
      const bool capped = emits && new_time < frames[b] && on_frame[b] >= max_symbols &&
                          last_frame[b] == new_time;
      time[b] = new_time + (capped ? 1 : 0);
    }
    MARK(3);
    if (!emit) continue;

    // Layer 0 straight from the table (no barrier since the select), then the layers above
    // and the projection, each from the previous phase's h in memory. While waiting at the
    // barrier after a phase, the block computes the recurrent half of the layer whose new h
    // is its input (rec_{l-1} = W_hh_{l-1} @ h_{l-1}) for the next emission.
    cell_update(0, emit, false);
    MARK(4);
    arrive(counter);
    for (int l = 1; l <= L; ++l) {
      wait_for(counter, ++passed * P);
      MARK(5);
      load_rows_l2(xs, h_new + (size_t)(l - 1) * MAX_ROWS * H, H, emit);
      __syncthreads();
      MARK(6);
      if (l < L) {
        products(w_ih(l), G, H, xs, emit, res);
        __syncthreads();
        cell_update(l, emit, true);
      } else {
        products(w_pred, nj, H, xs, emit, res);
        __syncthreads();
        for (int i = tid; i < MAX_ROWS * nj; i += THREADS) {
          const int b = i / nj, r = i % nj;
          if (emit >> b & 1u) pred[b * J + j0 + r] = res[b * nj + r] + bias_pred[r];
        }
      }
      MARK(7);
      arrive(counter);
      products(w_hh(l - 1), G, H, xs, emit, rec + (l - 1) * MAX_ROWS * G);
      MARK(8);
    }
    wait_for(counter, ++passed * P);
    MARK(5);
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
