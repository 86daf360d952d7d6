// The paged KV cache's block manager: which blocks of a fixed pool each sequence owns, reference counts
// that let forks share blocks (copy-on-write), and a prefix cache of full blocks keyed by a chained XXH3
// hash. It holds metadata only — block ids, counts, hashes, the token ids each block's K/V stands for —
// and hands out block ids and slot indices; the tensor side (havoc/cache.py) moves the K/V.
//
// Design in one paragraph. A pool of `num_blocks` blocks of `block_size` token slots; slot
// `block * block_size + offset` is where a token's K/V lives. A sequence owns a table of blocks,
// ceil(length / block_size) of them. Forks copy the table and bump reference counts. A block may only be
// written while it is private (one reference, not in the prefix cache); appending into a shared or cached
// partial block first moves the sequence to a fresh block and reports the (src, dst) copy the tensor side
// must make. A block that becomes full is published in the prefix cache (so every full block of every
// table is; equal-content twins too) under
// key = XXH3(tokens, seed = key of the block before it, or the namespace's seed for the first block);
// lookups compare the stored tokens, namespace and parent block on every hash hit, so a collision can never
// serve another sequence's data. Unreferenced cached blocks stay until their slot is needed, then go least
// recently released first, and only blocks no other cached block extends (leaves before parents).
//
// Contract with the tensor side: make a call's copies before its writes, and write every slot a call hands
// out before anything attends over those blocks — a block is published by the call that fills it, before
// its K/V exists, so a later add() may already reuse it (within one forward: write all new K/V of a layer
// before that layer's attention). A sequence freed before its planned tokens were computed leaves such
// blocks published with garbage K/V: compute what was planned before freeing (there is no call yet that
// drops only a sequence's uncomputed blocks from the cache).
//
// Error guarantee: every mutating call plans first and mutates only once it knows it will succeed. When it
// throws OutOfBlocks, UnknownSequence or std::invalid_argument, the manager is exactly as before the call.
// (std::bad_alloc from the host heap is not covered: tables, the sequence map and the copy list grow
// during planning and the prefix index never grows, but the LRU set allocates a node while mutating.)
//
// Thread-safety: every public method locks one internal mutex, so a manager may be shared between threads;
// calls are serialized. No method touches Python, so the bindings may release the GIL around any of them
// without deadlock (a thread holding the mutex never waits for the GIL). Table views (TableView) are not
// synchronized: read them only while no other thread mutates that sequence.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "block_table.h"
#include "flat_map.h"

namespace havoc {

// Not enough free or evictable blocks for the call. The manager is unchanged.
class OutOfBlocks : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A sequence id the manager does not hold.
class UnknownSequence : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Copy block `src` to block `dst` (all layers, K and V) before any write of the same call.
struct BlockCopy {
  int32_t src;
  int32_t dst;
};

// Counters. used + free + evictable == num_blocks.
struct BlockManagerStats {
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t watermark_blocks = 0;
  int64_t used = 0;       // referenced by at least one sequence
  int64_t free = 0;       // on the free list: content worthless
  int64_t cached = 0;     // published in the prefix cache (referenced or not)
  int64_t evictable = 0;  // cached and unreferenced: reusable, after eviction
  int64_t num_seqs = 0;
  int64_t evictions = 0;            // cached blocks dropped so far (to make room, or by evict())
  int64_t cow_copies = 0;           // block copies handed out by step()
  int64_t prefix_queries = 0;       // add() calls
  int64_t prefix_query_tokens = 0;  // prompt tokens passed to add()
  int64_t prefix_hit_tokens = 0;    // of those, tokens served by the prefix cache (skipped)
};

// A zero-copy window on a sequence's block table. `storage` keeps the memory alive, so the pointer never
// dangles; the contents are those of the sequence's table until the sequence is next mutated, after which
// they are unspecified (take a new view).
struct TableView {
  BlockTable storage;
  const int32_t* data = nullptr;
  int64_t size = 0;
};

// Full state, for tests (compare implementations, check that a failed call changed nothing).
struct CachedBlockInfo {
  int32_t block;
  int32_t parent;
  std::string ns;
  uint64_t key;
  int32_t children;
  int32_t ref;
  uint64_t stamp;  // meaningful when ref == 0
  std::vector<int32_t> tokens;
};
struct SequenceInfo {
  int64_t id;
  int64_t length;
  std::string ns;
  std::vector<int32_t> table;
  std::vector<int32_t> tokens;
};
struct BlockManagerSnapshot {
  uint64_t clock = 0;
  std::vector<int32_t> free_list;  // bottom to top: the last one is handed out next
  std::vector<int32_t> ref;
  std::vector<CachedBlockInfo> cached;                          // by block id
  std::vector<std::pair<uint64_t, int32_t>> evictable_leaves;   // (stamp, block), eviction order
  std::vector<SequenceInfo> seqs;                               // by sequence id
  BlockManagerStats stats;
};

class BlockManager {
 public:
  // `watermark`: fraction of the pool that can_allocate() keeps in reserve for running sequences.
  // `hash_bits` < 64 truncates block keys (a test hook that forces collisions; 64 in production).
  BlockManager(int64_t num_blocks, int64_t block_size, double watermark = 0.0, int hash_bits = 64);

  // --- mutations ----------------------------------------------------------------------------------
  // New sequence holding `tokens`. Reuses the longest cached prefix of whole blocks, but never the whole
  // prompt: at most (n_tokens - 1) / block_size blocks, so at least one token is computed. Returns the
  // number of leading tokens whose K/V is already in place (a multiple of block_size).
  int64_t add(int64_t seq_id, const int32_t* tokens, int64_t n_tokens, const std::string& ns);

  // One decode step for a batch: sequence seq_ids[i] appends tokens[i * tokens_per_seq ...]. Writes the
  // slot of every appended token to slots_out (n_seqs * tokens_per_seq entries, same order) and appends
  // to `copies` the block copies to make before those writes. Ids must be distinct.
  void step(const int64_t* seq_ids, int64_t n_seqs, const int32_t* tokens, int64_t tokens_per_seq,
            int64_t* slots_out, std::vector<BlockCopy>& copies);

  // Keep the first n_tokens tokens (n_tokens <= length). Never allocates.
  void truncate(int64_t seq_id, int64_t n_tokens);
  void free(int64_t seq_id);
  // child shares all of parent's blocks, the partial last one included.
  void fork(int64_t parent_id, int64_t child_id);
  // Drop up to n unreferenced cached blocks (LRU leaves first) onto the free list; returns how many.
  int64_t evict(int64_t n_blocks);

  // --- queries ------------------------------------------------------------------------------------
  // Cached blocks matching the leading whole blocks of `tokens` in namespace `ns` (read-only: no
  // counters, no LRU update).
  std::vector<int32_t> lookup(const int32_t* tokens, int64_t n_tokens, const std::string& ns) const;
  // Whether a new sequence of n_tokens fits while leaving the watermark free (ignores prefix hits).
  bool can_allocate(int64_t n_tokens) const;
  bool contains(int64_t seq_id) const;
  int64_t length(int64_t seq_id) const;
  std::vector<int64_t> seq_ids() const;  // sorted
  TableView table(int64_t seq_id) const;
  // Slots of positions [start, end) of a sequence; end defaults to its length.
  std::vector<int64_t> slots(int64_t seq_id, int64_t start, std::optional<int64_t> end) const;
  // Token ids of the whole sequence, read back from the blocks.
  std::vector<int32_t> tokens(int64_t seq_id) const;
  std::vector<int32_t> block_tokens(int64_t block) const;

  // Batch views for kernels. Padded: row-major (n, width) tables, `pad` beyond each row's blocks; width is
  // the largest block count, or `min_width` if larger (a fixed width for captured graphs).
  void padded_tables(const int64_t* seq_ids, int64_t n, int32_t pad, int64_t min_width,
                     std::vector<int32_t>& tables, int64_t& width, std::vector<int32_t>& lengths) const;
  // CSR: blocks of sequence i are indices[indptr[i]:indptr[i+1]]; last_len[i] = tokens in its last block
  // (1..block_size, 0 for an empty sequence).
  void csr_tables(const int64_t* seq_ids, int64_t n, std::vector<int32_t>& indptr,
                  std::vector<int32_t>& indices, std::vector<int32_t>& last_len) const;

  BlockManagerStats stats() const;
  BlockManagerSnapshot snapshot() const;
  // Recomputes every invariant from scratch; throws std::logic_error naming the first one broken.
  void check_invariants() const;

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t watermark_blocks() const { return watermark_blocks_; }

 private:
  using Table = BlockTable;
  struct Sequence {
    // ceil(length / block_size) distinct blocks. Never reallocated in place, so a TableView's pointer
    // stays valid: growth swaps in a larger copy (see reserve_table).
    Table table;
    int64_t length = 0;
    int32_t ns = 0;
    uint64_t plan_mark = 0;  // scratch for step(): catches repeated ids
  };

  // All private helpers expect mu_ held.
  Sequence& find_seq(int64_t seq_id);
  const Sequence& find_seq(int64_t seq_id) const;
  uint64_t block_key(const int32_t* block_tokens, uint64_t seed) const;
  int32_t find_cached(int32_t parent, uint64_t key, const int32_t* block_tokens, int32_t ns) const;
  std::vector<int32_t> match(const int32_t* tokens, int64_t n_blocks, int32_t ns) const;
  int32_t take_block();
  int32_t evict_one();
  void acquire(int32_t b);
  // Drop one reference. Inline, the last reference's bookkeeping out of line: free() and truncate() call it
  // once per block, and GCC had stopped inlining the whole function into free() (a call per block).
  void release(int32_t b) {
    if (--ref_[b] == 0) released_last(b);
  }
  void released_last(int32_t b);
  void publish(const Table& table, int64_t pos, int32_t ns);
  void uncache(int32_t b);
  void reserve_table(Sequence& s, int64_t n_blocks);
  int32_t intern_ns(const std::string& ns);
  int32_t find_ns(const std::string& ns) const;
  BlockManagerStats stats_locked() const;
  int64_t blocks_for(int64_t n_tokens) const { return (n_tokens + block_size_ - 1) / block_size_; }
  // NOTE: 64-bit idiv was about half of step()'s time (perf, Xeon @ 2.5 GHz, 256 sequences: 28 us). In
  // step, positions are below 2^32 (the pool has < 2^31 slots), so divide in 32 bits, or shift when the
  // block size is a power of two (the usual 16).
  uint32_t block_index(int64_t pos) const {
    return block_shift_ >= 0 ? static_cast<uint32_t>(pos) >> block_shift_
                             : static_cast<uint32_t>(pos) / static_cast<uint32_t>(block_size_);
  }
  uint32_t offset_in_block(int64_t pos) const {
    return block_shift_ >= 0 ? static_cast<uint32_t>(pos) & static_cast<uint32_t>(block_size_ - 1)
                             : static_cast<uint32_t>(pos) % static_cast<uint32_t>(block_size_);
  }

  // Pool geometry, fixed at construction.
  const int32_t num_blocks_;
  const int32_t block_size_;
  const int32_t block_shift_;  // log2(block_size_) if a power of two, else -1
  const int64_t watermark_blocks_;
  const uint64_t hash_mask_;

  mutable std::mutex mu_;  // guards everything below; each public method takes it once

  // Per-block state, indexed by block id. Every block is in exactly one of three states:
  //   free      ref == 0, !cached   on free_ exactly once; its tokens are garbage
  //   evictable ref == 0,  cached   in leaves_ (key {stamp, id}) iff it has no cached children
  //   in use    ref  > 0            cached or not; written only when ref == 1 && !cached
  std::vector<int32_t> ref_;       // entries naming the block, summed over all sequence tables; >= 0
  std::vector<uint8_t> cached_;    // published in the prefix cache; then its tokens never change
  // Meaningful only while cached_[b]:
  std::vector<uint64_t> key_;      // block_key(tokens of b, parent's key or the namespace seed)
  std::vector<int32_t> parent_;    // the block before b in every table holding b; -1 for a first block.
                                   // Hence a referenced cached block has referenced ancestors, so the
                                   // evictable set is closed under descendants and always has a leaf.
  std::vector<int32_t> ns_;        // namespace id; a lookup only matches blocks of its own namespace
  std::vector<int32_t> children_;  // cached blocks whose parent_ is b; only blocks with 0 are evicted
  std::vector<int32_t> hash_next_; // next cached block with the same key (collision chain), -1 ends it
  std::vector<uint64_t> stamp_;    // clock_ when the last reference went (ref == 0 && cached): LRU order
  std::vector<int32_t> tokens_;    // num_blocks * block_size token ids: what each slot's K/V stands for
  std::vector<int32_t> free_;      // LIFO stack of free blocks (recently freed memory is reused first)
  std::set<std::pair<uint64_t, int32_t>> leaves_;  // evictable blocks with no cached children, LRU first
  FlatMap<int32_t> index_;  // key -> newest cached block of its chain (equal keys: twins or collisions)
  int64_t n_cached_ = 0;     // == count of cached_
  int64_t n_evictable_ = 0;  // == count of ref 0 && cached

  FlatMap<Sequence> seqs_;  // by sequence id
  std::unordered_map<std::string, int32_t> ns_ids_;  // namespaces are interned, never forgotten
  std::vector<std::string> ns_names_;
  std::vector<uint64_t> ns_seeds_;                   // XXH3 of the name: the seed of a first block's key

  uint64_t clock_ = 0;  // ticks once per successful mutating call; stamps are taken from it

  int64_t evictions_ = 0;
  int64_t cow_copies_ = 0;
  int64_t prefix_queries_ = 0;
  int64_t prefix_query_tokens_ = 0;
  int64_t prefix_hit_tokens_ = 0;

  // Scratch for step() planning (no state): simulated reference drops of shared blocks.
  uint64_t plan_epoch_ = 0;
  std::vector<int32_t> sim_ref_drop_;
  std::vector<int32_t> sim_touched_;
  std::vector<Sequence*> plan_seqs_;
  std::vector<uint8_t> plan_action_;
};

}  // namespace havoc
