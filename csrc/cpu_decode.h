// CPU kernels of the decode hot path: a threaded matrix-vector / small-matrix product over fp32, bf16 and
// int8 weights with fp32 accumulation, its LM-head variant that keeps only the argmax, and a whole decode
// step of a Llama-style decoder over the paged KV cache in one call.
//
// Decode is a stream over the weights: at batch 1 each weight is used once per token, so a step costs
// (bytes of weights) / (memory bandwidth); at batch B each weight must still be read from memory once per
// step and used B times from cache. The product here reads a weight matrix row-major — rows are
// contiguous, so the whole matrix is one forward stream that the hardware prefetchers follow — and works
// on tiles of NR weight rows x MR activation rows held in registers: each weight vector loaded feeds MR
// fused multiply-adds, each activation vector NR. Activations stay fp32 throughout (they are a few KB per
// sequence and live in L1/L2); only the weights' format varies:
//   fp32, bf16 (widened to fp32 by a shift in registers: this CPU family may lack AVX512-BF16),
//   int8 with one fp32 scale per `group` consecutive inputs of a row (symmetric: w = q * scale).
// No libtorch: every pointer is a raw buffer (the bindings get them from NumPy views of CPU tensors).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "paged_attention.h"

namespace havoc {

enum class WeightDType { kFloat32 = 0, kBFloat16 = 1, kInt8 = 2 };

// A (rows, cols) weight matrix, row-major and contiguous: y = x @ W.T reads row n for output n.
// int8: W[n, k] = q[n, k] * scales[n * groups() + k / group], group a positive multiple of 64. Rows are
// stored packed for the kernels (`ld` = cols rounded up to 64 bytes, zero-padded): within each block of 64
// inputs, byte 4 j + c holds q[64 b + 16 c + j] (j < 16, c < 4). A 32-bit lane j of a vector load then
// carries inputs j, j + 16, j + 32, j + 48, and two shifts sign-extend block c in place — GCC 12 turns a
// plain int8 -> int32 vector conversion into 16 scalar moves (measured: int8 4x slower than bf16).
struct WeightView {
  WeightDType dtype = WeightDType::kFloat32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  const float* scales = nullptr;  // int8 only: (rows, groups()) fp32
  int64_t group = 0;              // int8 only
  int64_t groups() const { return group > 0 ? (cols + group - 1) / group : 1; }
  int64_t ld() const { return dtype == WeightDType::kInt8 ? (cols + 63) / 64 * 64 : cols; }  // row stride
};

// The int8 packing of input k within a row: its byte offset.
inline int64_t int8_offset(int64_t k) { return k / 64 * 64 + 4 * (k % 16) + (k % 64) / 16; }

// Kernel variants compiled into the module that this CPU can run, narrowest first ("scalar" — the
// compiler's baseline — always; "avx2", "avx512" on x86-64 where the CPU has them). "auto" picks the last.
std::vector<std::string> linear_isas();

// y[m, :] (=|+=) x[m, :] @ W.T for m < M. x is (M, W.cols) fp32 with row stride ldx, y (M, W.rows) fp32
// with row stride ldy; `accumulate` adds to y (a residual add fused into the product). OpenMP threads
// split W's rows (each thread streams its own contiguous part of W). Throws std::invalid_argument for a
// bad weight description or isa.
void linear(const float* x, int64_t M, int64_t ldx, const WeightView& w, float* y, int64_t ldy, bool accumulate,
            const std::string& isa = "auto");

// index[m] = argmax_n (x[m, :] @ W.T)[n], value[m] = that maximum, without writing the M x rows product
// (the LM head of greedy decoding: per thread only a tile of logits exists at a time). Ties go to the
// lowest index, as torch.argmax; NaN logits are never chosen.
void linear_argmax(const float* x, int64_t M, int64_t ldx, const WeightView& w, int64_t* index, float* value,
                   const std::string& isa = "auto");

struct DecoderConfig {
  int64_t dim = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t rotary_dim = 0;  // leading features of a head that RoPE rotates (rotate-half pairing)
  int64_t ffn_hidden = 0;
  int64_t vocab_size = 0;
  float norm_eps = 1e-5f;
  double rope_theta = 10000.0;
};

// One block's weights (havoc.model's names) and its K/V pools. wqkv: (n_heads + 2 n_kv_heads) * head_dim
// rows (q, then k, then v); w13: 2 * ffn_hidden rows (gate, then up).
struct DecoderLayer {
  const float* attention_norm = nullptr;  // (dim,) fp32
  const float* ffn_norm = nullptr;        // (dim,) fp32
  WeightView wqkv, wo, w13, w2;
  void* k_pool = nullptr;  // (num_blocks, block_size, n_kv_heads, head_dim) in the cache's dtype
  void* v_pool = nullptr;
};

// The decode step of havoc.model.HavocModel for a batch of sequences, one new token each, over the paged
// KV cache: embedding, per block RMSNorm -> qkv -> RoPE -> K/V written to their slots -> paged attention
// -> wo (+ residual) -> RMSNorm -> w13 -> SwiGLU -> w2 (+ residual), final RMSNorm, LM head. The buffers
// it works in are kept between steps (no allocation once a batch size has been seen). One step at a time:
// a mutex serializes concurrent calls.
class Decoder {
 public:
  Decoder(const DecoderConfig& config, std::vector<DecoderLayer> layers, const float* final_norm,
          WeightView embedding, WeightView head, KVDType kv_dtype, PoolShape pool, std::string isa);

  // tokens, positions, slots: (n,) int64; block_tables (n, table_width) int32 and lengths (n,) int32 as
  // for paged_decode_attention, the lengths counting the new token, which goes to slot slots[i] at
  // position positions[i]. A row is one token: several rows of one sequence (a prompt chunk, positions
  // p0, p0 + 1, ...) each attend over their own length, every row's K/V written before any attention.
  // Writes logits (k, vocab) fp32 if `logits`, the argmax ids (k,) if `next_tokens`, for the k rows listed
  // in logit_rows / argmax_rows (null: all n rows, k = n). Every id, slot, block, length and row index is
  // checked before anything is written (std::out_of_range).
  //
  // Batch invariance: a row's result depends on its token, position and cached K/V alone, never on the
  // other rows of the call — the products accumulate each output in the same order for any number of
  // rows, and attention splits a sequence by its length only (kSplitTokens) — so a prompt computed in
  // chunks, batched with others or recomputed after preemption gives bit-identical logits.
  void step(const int64_t* tokens, const int64_t* positions, int64_t n, const int64_t* slots,
            const int32_t* block_tables, int64_t table_width, const int32_t* lengths, float* logits,
            int64_t* next_tokens, const int64_t* logit_rows = nullptr, int64_t n_logit_rows = -1,
            const int64_t* argmax_rows = nullptr, int64_t n_argmax_rows = -1);

  // Attention's split-K granularity in tokens (a multiple of any block size up to 256): long sequences
  // still spread over threads at batch 1, and the split points depend on a sequence's length alone.
  static constexpr int64_t kSplitTokens = 256;

  const DecoderConfig& config() const { return cfg_; }

 private:
  DecoderConfig cfg_;
  std::vector<DecoderLayer> layers_;
  const float* final_norm_;
  WeightView embedding_, head_;
  KVDType kv_dtype_;
  PoolShape pool_;
  std::string isa_;
  std::vector<float> inv_freq_;
  std::vector<float> work_;           // activations, fp32
  std::vector<uint16_t> work_bf16_;   // q and attention output when the cache is bf16
  std::vector<float> head_rows_;      // the final-norm rows the LM head reads, when not all of them
  std::mutex mutex_;
};

}  // namespace havoc
