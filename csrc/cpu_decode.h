// CPU kernels of the decode hot path: a threaded matrix-vector / small-matrix product over fp32, bf16 and
// int8 weights with fp32 accumulation, its LM-head variant that keeps only the argmax, and a whole decode
// step of a Llama-style decoder over the paged KV cache in one call.
//
// Decode is a stream over the weights: at batch 1 each weight is used once per token, so a step costs
// (bytes of weights) / (memory bandwidth); at batch B each weight must still be read from memory once per
// step and used B times from cache, and the step becomes bound by the multiply-adds. The product reads a
// weight matrix row-major (rows contiguous: one forward stream the prefetchers follow) in tiles of weight
// rows x activation rows held in registers (or AMX tiles). What each weight format multiplies:
//   fp32:  fp32 weights x fp32 activations;
//   bf16:  bf16 weights x activations rounded to bf16 (round to nearest even), fp32 accumulation. Every
//          product of two bf16 values is exact in fp32, so on every variant this is the fp32 sum of the
//          same products (llama.cpp's BF16 path rounds its activations the same way);
//   int8:  int8 weights (one fp32 scale per `group` inputs of a row) x activations quantized to int8 with
//          one fp32 scale per the same group of each activation row (symmetric, like llama.cpp's Q8_0 x
//          Q8_0 with its 32-input blocks): per group an exact integer dot product, scaled by both scales;
//   int8_weight_only: the same int8 weights x fp32 activations.
// Each format means the same numbers on every kernel variant (up to the order of fp32 additions): the
// variants differ in the instructions, never in what is computed. Tests compare each variant with the
// formula above.
// No libtorch: every pointer is a raw buffer (the bindings get them from NumPy views of CPU tensors).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "paged_attention.h"

namespace havoc {

// The buffers the kernels read whole vectors from start on a 64-byte cache line (a vector of malloc's
// 16-byte alignment straddles two lines in 3 of 4 loads: the fp32 product of 32 rows took 1.4x as long).
template <class T>
struct CacheAligned {
  using value_type = T;
  CacheAligned() = default;
  template <class U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t{64}); }
  template <class U>
  bool operator==(const CacheAligned<U>&) const { return true; }
  template <class U>
  bool operator!=(const CacheAligned<U>&) const { return false; }
};
template <class T>
using AlignedVector = std::vector<T, CacheAligned<T>>;

enum class WeightDType { kFloat32 = 0, kBFloat16 = 1, kInt8 = 2, kInt8WeightOnly = 3 };

// A (rows, cols) weight matrix, row-major and contiguous: y = x @ W.T reads row n for output n.
// int8 (both formats): W[n, k] = q[n, k] * scales[n * groups() + k / group], group a positive multiple of
// 64, stored as unsigned bytes q + 128 in input order, rows padded to `ld` = cols rounded up to 64 with the
// byte 128 (q = 0). Offset bytes because the dot-product instructions (VNNI's vpdpbusd, AMX's tdpbusd)
// multiply unsigned by signed bytes; the activations are the signed side, and their sum (times 128) is
// subtracted once per group.
// int8 "interleaved" (group 64, int8 activations, read by the avx512_vnni and avx512_bf16 variants only):
// the same bytes, rows still row-major and padded, but inside a row its 64-byte chunks (= groups) are
// interleaved in blocks of B chunks — 16 while 16 are left, then the binary digits of the rest (8, 4, 2, 1)
// — so that lane l of a 16-lane vpdpbusd sums chunk l mod B of its block: byte t of word p (4 bytes) of
// chunk c0 + b sits at 64 (c0 + p / (16 / B)) + 4 ((p % (16 / B)) B + b) + t. A block's B products then
// hold whole groups in their lanes and are scaled once per block instead of once per group
// (interleave_int8_rows writes the layout; scales stay (rows, groups) in group order).
struct WeightView {
  WeightDType dtype = WeightDType::kFloat32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  const float* scales = nullptr;  // int8 only: (rows, groups()) fp32
  int64_t group = 0;              // int8 only
  bool interleaved = false;       // int8 only: the interleaved layout above
  bool int8() const { return dtype == WeightDType::kInt8 || dtype == WeightDType::kInt8WeightOnly; }
  int64_t groups() const { return group > 0 ? (cols + group - 1) / group : 1; }
  int64_t ld() const { return int8() ? (cols + 63) / 64 * 64 : cols; }  // row stride in elements
};

// Kernel variants, narrowest first. Each is compiled into the module on x86-64 (the baseline everywhere)
// and runs where the CPU has its instructions:
//   scalar       the compiler's baseline target (SSE2 on x86-64), 4 fp32 lanes;
//   avx2         AVX2 + FMA, 8 lanes; bf16 widened to fp32 by shifts; int8 x int8 by vpmaddwd on bytes
//                widened to 16 bits (int8_weight_only: widened to fp32 by shifts and a convert);
//   avx_vnni     avx2 plus AVX-VNNI's vpdpbusd (ymm) for int8 x int8;
//   avx512       AVX-512 F/BW/VL/DQ, 16 lanes, widening like avx2;
//   avx512_vnni  avx512 plus vpdpbusd (zmm) for int8 x int8;
//   avx512_bf16  avx512_vnni plus vdpbf16ps for bf16 x bf16;
//   amx          avx512_bf16 plus AMX tiles (tdpbf16ps, tdpbusd) for products of several activation rows
//                (and the OS's permission to use the tile registers).
// "auto" picks the last one this CPU runs, passing over avx512_bf16 where vdpbf16ps does not pay
// (bf16_dot_pays): the AMX variant aside, its bf16 products are then avx512_vnni's widened ones, faster.
std::vector<std::string> linear_variants();
// The variant "auto" runs.
std::string linear_auto();
// vdpbf16ps's issue rate on this core as a fraction of the zmm FMA's, measured once per process (0 where
// the CPU or build lacks avx512_bf16). One vdpbf16ps does 32 multiply-adds, one FMA 16 after the weights are
// widened (a shift or a mask per 16 weights, shared by a tile's activation rows): at a rate of 1/2 the dot
// does the same multiply-adds a cycle and skips the widening; at 1/4 it does half. Measured: 0.25 on an
// Intel Xeon with AVX512-BF16 but no AMX (family 6 model 207, one vdpbf16ps every 2 cycles against two
// FMAs a cycle), where its bf16 products of 32 activation rows took 64 ms a SmolLM2 step against 48 ms
// widened; on the AVX512-BF16 EPYC the dot halved them (bench/RESULTS.md). kBf16DotPays sits between.
constexpr double kBf16DotPays = 0.35;
double bf16_dot_rate();
bool bf16_dot_pays();
// Those this CPU (and OS) can run, narrowest first.
std::vector<std::string> linear_isas();
// Why `variant` cannot run here ("" when it can; "unknown kernel variant" for a name that is none).
std::string linear_variant_missing(const std::string& variant);
// What `variant` ("auto" resolves) runs for weights of `dtype`, in words (for `havoc env`).
std::string linear_kernel(const std::string& variant, WeightDType dtype);
// The paged-attention variant ("scalar", "avx2", "avx512") that the decode step runs with `variant`.
std::string attention_isa_for(const std::string& variant);

// Weight rows a thread streams at once in a product of ONE activation row (a batch-1 decode step): 4 (a
// tile of 4 rows, 4 interleaved streams) or 1 (row after row, one sequential stream). Either gives the same
// bits (each row's sum is computed the same way); the speed is the CPU's prefetchers': AMD's (EPYC, Zen 4)
// follow one stream far better (bench/RESULTS.md), Intel's (the AMX Xeon) kept 4 at 98% of the bandwidth
// in fp32. 0 = by this CPU's vendor (AMD: 1, else 4). `set_batch1_streams` overrides it (tests, tuning).
int batch1_streams();
void set_batch1_streams(int streams);

// y[m, :] (=|+=) x[m, :] @ W.T for m < M. x is (M, W.cols) fp32 with row stride ldx, y (M, W.rows) fp32
// with row stride ldy; `accumulate` adds to y (a residual add fused into the product). OpenMP threads
// split W's rows: for up to 8 activation rows each thread streams its own contiguous part of W, for more
// they take chunks of 64 rows as they come. Throws std::invalid_argument for a
// bad weight description or variant.
void linear(const float* x, int64_t M, int64_t ldx, const WeightView& w, float* y, int64_t ldy, bool accumulate,
            const std::string& isa = "auto");

// index[m] = argmax_n (x[m, :] @ W.T)[n], value[m] = that maximum, without writing the M x rows product
// (the LM head of greedy decoding: per thread only a tile of logits exists at a time). Ties go to the
// lowest index, as torch.argmax; NaN logits are never chosen.
void linear_argmax(const float* x, int64_t M, int64_t ldx, const WeightView& w, int64_t* index, float* value,
                   const std::string& isa = "auto");

// Backs the whole 2 MiB pages inside [p, p + bytes) with transparent huge pages (Linux 6.1+'s
// madvise(MADV_COLLAPSE): the kernel migrates the data in place; same addresses, same contents). A stream
// over the weights then misses the TLB once per 2 MiB instead of once per 4 KiB. Returns the bytes now
// backed by huge pages (0 where the OS cannot: older kernels, THP off, other systems).
int64_t collapse_hugepages(void* p, int64_t bytes);

// The activation quantization of the int8 format, for tests: q (M, ld) int8 (zero past cols), scales and
// corrections (M, groups) as the kernels compute them: scale = max |x| over the group / 127, q =
// round-half-even(x * (1 / scale)) clamped to [-127, 127] (0 where the group is all zero), correction =
// -128 * sum of the group's q.
void quantize_rows_int8(const float* x, int64_t M, int64_t ldx, int64_t cols, int64_t group, int8_t* q,
                        float* scales, int32_t* corrections);

// Rows of int8 weight bytes (rows, ld), ld a multiple of 64, from row-major into the interleaved layout
// (WeightView), or back with `inverse`. src and dst must not overlap.
void interleave_int8_rows(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t ld, bool inverse);

// Whether `variant` ("auto" resolves) reads int8 weights in the interleaved layout.
bool reads_interleaved(const std::string& variant);

// The model features the decode step implements (havoc.cpu_decode.missing_features maps a model onto these
// names): "block:pre_norm" (x + attn(norm(x)), then x + mlp(norm(x))), "norm:rms", "embedding:lookup"
// (unscaled), "attention:gqa" (n_heads a multiple of n_kv_heads, MHA included), "attention:fused_qkv"
// (one bias-free projection, q then k then v rows), "attention:causal", "rope:rotate_half" (inv_freq =
// theta^(-2i / rotary_dim)), "rope:partial" (rotary_dim < head_dim, the rest passed through),
// "mlp:swiglu" (one bias-free w13, gate rows then up rows; bias-free w2), "head:tied", "head:untied",
// "weights:float32", "weights:bfloat16", "kv:float32", "kv:bfloat16".
std::vector<std::string> decoder_features();

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
// a mutex serializes concurrent calls. Threads: several rows run each product as its own parallel region;
// one row runs all its layers in one region (the threads meet at barriers; up to kSplitTokens of context,
// attention's one work unit runs on thread 0 while the others read wo ahead, past that they share its
// units) — the same bits.
//
// This is a second definition of the architecture; decoder_features() names what it implements, and
// havoc.cpu_decode runs a model through it only when the model needs nothing else.
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
  //
  // prompt_runs: n_prompt_runs (first row, count) pairs, each run consecutive tokens of one sequence (one
  // block table, lengths rising by one), whose attention runs as a prefill (csrc/attention.h: 2x the decode
  // kernel per row at 512 tokens) instead of row by row. That kernel's rows are as invariant as the decode
  // kernel's, but the two round differently: a caller marks rows by what they are (a request's prompt
  // tokens), never by how the step happens to group them.
  void step(const int64_t* tokens, const int64_t* positions, int64_t n, const int64_t* slots,
            const int32_t* block_tables, int64_t table_width, const int32_t* lengths, float* logits,
            int64_t* next_tokens, const int64_t* logit_rows = nullptr, int64_t n_logit_rows = -1,
            const int64_t* argmax_rows = nullptr, int64_t n_argmax_rows = -1, const int64_t* prompt_runs = nullptr,
            int64_t n_prompt_runs = 0);

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
  // Work space, each buffer starting on a cache line:
  AlignedVector<float> work_;          // activations, fp32
  AlignedVector<uint16_t> work_bf16_;  // q and attention output when the cache is bf16
  AlignedVector<float> head_rows_;     // the final-norm rows the LM head reads, when not all of them
  AlignedVector<float> team_work_;     // per thread of a one-row step: its normalized row, SwiGLU and attention outputs
  std::vector<float> team_partial_;    // a one-row step's attention states of split-K, shared by its threads
  std::mutex mutex_;
};

}  // namespace havoc
