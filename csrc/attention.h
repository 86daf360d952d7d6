// CPU attention over contiguous K/V: the prefill half of what the paged cache's decode attention
// (paged_attention.h) does for one token. No libtorch: raw buffers with strides, from NumPy views of CPU
// tensors (DESIGN.md).
//
//   out[b, h, t] = sum_j softmax_j(scale * q[b, h, t] . k[b, h / G, j]) v[b, h / G, j]
//
// over the keys j that query t may see: j <= q_offset + t when causal, and key_mask[b, j] != 0 when a mask
// is given; G = n_heads / kv_heads query heads share a KV head (GQA). A query that sees no key gets zeros.
// Storage is fp32 or bf16 (its upper 16 bits in a uint16_t); the arithmetic is fp32.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "paged_attention.h"  // KVDType

namespace havoc {

// A (batch, heads, rows, head_dim) operand: strides in elements, head_dim contiguous.
struct HeadsView {
  const void* data = nullptr;
  int64_t batch_stride = 0;
  int64_t head_stride = 0;
  int64_t row_stride = 0;
};

struct AttentionArgs {
  KVDType dtype = KVDType::kFloat32;  // of q, k, v and out
  HeadsView q;                        // (batch, n_heads, q_len, head_dim)
  HeadsView k, v;                     // (batch, kv_heads, kv_len, head_dim)
  HeadsView out;                      // (batch, n_heads, q_len, head_dim), written
  int64_t batch = 0, n_heads = 0, kv_heads = 0, q_len = 0, kv_len = 0, head_dim = 0;
  bool causal = true;
  int64_t q_offset = 0;              // position of query 0 among the keys (causal)
  const uint8_t* key_mask = nullptr;  // (batch, kv_len), 0: the key is ignored; null: none
  int64_t key_mask_stride = 0;
  float scale = 1.0f;
  // Paged K/V (the C++ decoder's prompt rows): k.data and v.data are pools of block_size-token blocks and
  // key j of sequence b is row block_table[b * table_stride + j / block_size] * block_size + j % block_size
  // (row_stride apart; head_stride between KV heads; batch_stride unused). Null: rows at j * row_stride.
  // The ids are trusted here: the decoder checks its tables first.
  const int32_t* block_table = nullptr;
  int64_t table_stride = 0;
  int64_t block_size = 0;
};

// FlashAttention's recurrence on the CPU: a work unit is one (sequence, KV head, block of queries) with
// the block's tokens of all G query heads of that KV head, so each K/V row is read once per unit; K/V in
// blocks of 64 keys, scores computed transposed (keys x queries, queries in the vector lanes) so the
// online softmax needs no horizontal reductions. Units run on OpenMP threads, longest (latest queries)
// first. `isa`: "auto" or one of attention_isas().
//
// A row's result does not depend on the other rows of its unit or call: the keys go in blocks of 64 from
// key 0 whatever the unit, each query is one lane with its own sums in key order, and a block past a row's
// last key rescales it by exp(0) = 1 and adds exp(-inf) = 0 terms. So the decoder's prompt rows give the
// same bits however a prompt is chunked or batched.
void attention(const AttentionArgs& args, const std::string& isa = "auto");

// The variants this CPU and build run, narrowest first: paged_decode_attention's ("scalar", "avx2",
// "avx512": fp32 FMAs, bf16 widened), then "avx512_bf16" where AVX512-BF16 is there: bf16 operands with an
// even head_dim multiply pairs by vdpbf16ps (the probabilities rounded to bf16 for P V, as torch's bf16
// flash attention does); "auto" picks it for those.
std::vector<std::string> attention_isas();

}  // namespace havoc
