// CPU kernels of the paged KV cache's tensor side: write new K/V rows into their pool slots, copy blocks
// (copy-on-write), and decode attention over block tables. No libtorch: the kernels take raw buffers, which
// the bindings get from NumPy views of CPU tensors (DESIGN.md).
//
// The pool layout, per layer and for K and V alike: [num_blocks, block_size, kv_heads, head_dim],
// C-contiguous. Slot s = block * block_size + offset holds one token's K (or V) for every KV head, at
// element s * kv_heads * head_dim. The block manager (block_manager.h) decides which slots and blocks a
// sequence owns; these kernels move and read the data it describes, and trust none of its numbers: every
// slot, block id and length is checked against the pool before any element is touched, and a bad one
// throws std::out_of_range (std::invalid_argument for bad shapes) with nothing written.
//
// Storage is fp32 or bf16 (stored as its upper 16 bits in a uint16_t). Attention converts bf16 to fp32 in
// registers and accumulates in fp32; write/copy move bytes and do not care about the type.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace havoc {

enum class KVDType { kFloat32, kBFloat16 };

// Element size in bytes.
size_t dtype_size(KVDType dtype);

// One per-layer pool's geometry (K and V pools of a cache share it).
struct PoolShape {
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t slots() const { return num_blocks * block_size; }
  int64_t slot_elems() const { return kv_heads * head_dim; }
};

// A (rows, kv_heads, head_dim) source of K or V rows. Strides are in elements; head_dim is contiguous
// (so the model's q|k|v views go in without a copy: their rows and heads are strided, their features not).
struct RowsView {
  const void* data = nullptr;
  int64_t row_stride = 0;
  int64_t head_stride = 0;
};

// pool[slots[i]] = src row i, for K and V, i in [0, n_rows). Slots must be distinct (the manager hands
// out each slot once per call); repeated slots race when the rows are written in parallel.
void write_kv(void* k_pool, void* v_pool, const PoolShape& shape, size_t elem_size, RowsView k, RowsView v,
              const int64_t* slots, int64_t n_rows);

// For every pool p and every pair i: block copies[i][1] of p = block copies[i][0] of p. `copies` is
// n_copies (src, dst) pairs, row-major. The destinations must be distinct and no destination may be a
// source (the copies then commute and run in parallel); the manager's COW lists satisfy both.
void copy_blocks(const std::vector<void*>& pools, const PoolShape& shape, size_t elem_size,
                 const int64_t* copies, int64_t n_copies);

// Decode attention: one query token per sequence against that sequence's cached keys and values.
//   out[b, h] = sum_t softmax_t(scale * q[b, h] . K[b, t, h / G]) V[b, t, h / G],  t < lengths[b]
// with G = n_heads / kv_heads query heads per KV head (GQA) and K[b, t] at the slot
// block_tables[b, t / block_size] * block_size + t % block_size. A sequence of length 0 gets zeros.
struct DecodeAttentionArgs {
  KVDType dtype = KVDType::kFloat32;  // of q, the pools and out
  const void* q = nullptr;            // (n_seqs, n_heads, head_dim), head_dim contiguous
  int64_t q_seq_stride = 0;           // elements
  int64_t q_head_stride = 0;          // elements
  const void* k_pool = nullptr;
  const void* v_pool = nullptr;
  PoolShape shape;
  const int32_t* block_tables = nullptr;  // (n_seqs, table_width), row-major
  int64_t table_width = 0;
  const int32_t* lengths = nullptr;  // (n_seqs,)
  int64_t n_seqs = 0;
  int64_t n_heads = 0;
  float scale = 1.0f;
  void* out = nullptr;  // (n_seqs, n_heads, head_dim), contiguous
  // > 0: split-K by length alone — sequence b is cut at every split_tokens tokens (a multiple of the block
  // size) into ceil(lengths[b] / split_tokens) parts, whatever the batch and thread count, so its result
  // does not depend on what else is in the call (batch invariance); num_splits is then ignored.
  int64_t split_tokens = 0;
};

// Kernel variants compiled into the module. "auto" picks the widest one this CPU runs.
std::vector<std::string> decode_attention_isas();  // those this CPU can run, narrowest first

// One pass over K and V with an online softmax; a work unit is one sequence (or one split of it), all of
// its heads, reading each token's whole K/V row (every KV head) front to back, each KV head's slice used by
// its G query heads. Units run on OpenMP threads (dynamic schedule). `num_splits` > 0 cuts each sequence's
// blocks into that many chunks (split-K) whose partial softmax states are merged at the end, which keeps
// the threads busy for small batches of long sequences; 0 chooses from the batch shape and thread count. `isa`: "auto",
// "scalar" (the compiler's baseline), "avx2" or "avx512" (x86-64 only; must be in decode_attention_isas()).
void paged_decode_attention(const DecodeAttentionArgs& args, int64_t num_splits = 0,
                            const std::string& isa = "auto");

// The same with split_tokens > 0, from inside a parallel region: every thread of the team calls it with the
// same arguments and the same `partial` (a work buffer it grows), and the work units are shared among them
// (the same bits as paged_decode_attention). It returns once all of them are done. The arguments are not
// checked: the caller has (an exception cannot leave a parallel region).
void paged_decode_attention_team(const DecodeAttentionArgs& args, std::vector<float>& partial,
                                 const std::string& isa = "auto");
// The split count "auto" uses for a batch (exposed for tests and benchmarks).
int64_t decode_attention_splits(int64_t n_seqs, int64_t max_length, int64_t block_size);

}  // namespace havoc
