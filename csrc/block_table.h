// A sequence's block table: int32 block ids in one heap allocation that also holds the length, the
// capacity and an atomic reference count, so that zero-copy views (TableView, the NumPy arrays the
// bindings hand out) can keep the ids alive after the manager has moved on.
//
// NOTE: it replaced std::shared_ptr<std::vector<int32_t>>, whose control block and element buffer are two
// allocations: about 40 of a fork's ~160 ns (128-block parent, Xeon @ 2.5 GHz, fresh manager).
//
// The capacity is fixed when the table is made and push_back never reallocates, so a view's pointer never
// dangles: to grow, make a larger copy and swap it in (BlockManager::reserve_table). Handles are move-only;
// share() is the one way to add an owner, so sharing is never an accident of a copy.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <utility>

namespace havoc {

class BlockTable {
 public:
  BlockTable() = default;
  BlockTable(const BlockTable&) = delete;
  BlockTable& operator=(const BlockTable&) = delete;
  BlockTable(BlockTable&& o) noexcept : rep_(std::exchange(o.rep_, nullptr)) {}
  BlockTable& operator=(BlockTable&& o) noexcept {
    if (this != &o) {
      drop();
      rep_ = std::exchange(o.rep_, nullptr);
    }
    return *this;
  }
  ~BlockTable() { drop(); }

  // An empty table with room for `capacity` ids.
  static BlockTable with_capacity(size_t capacity) {
    if (capacity > UINT32_MAX) throw std::length_error("block table capacity beyond 2^32 entries");
    void* mem = ::operator new(sizeof(Rep) + capacity * sizeof(int32_t));
    BlockTable t;
    t.rep_ = new (mem) Rep{};
    t.rep_->capacity = static_cast<uint32_t>(capacity);
    return t;
  }
  // A new table holding this one's ids, with room for max(capacity, size()).
  BlockTable copy(size_t capacity) const {
    const size_t n = size();
    BlockTable t = with_capacity(capacity > n ? capacity : n);
    if (n > 0) std::memcpy(t.data(), data(), n * sizeof(int32_t));
    t.rep_->size = static_cast<uint32_t>(n);
    return t;
  }
  // Another owner of the same ids (what a view holds).
  BlockTable share() const {
    BlockTable t;
    if (rep_ != nullptr) {
      rep_->refs.fetch_add(1, std::memory_order_relaxed);
      t.rep_ = rep_;
    }
    return t;
  }

  size_t size() const { return rep_ ? rep_->size : 0; }
  size_t capacity() const { return rep_ ? rep_->capacity : 0; }
  int32_t* data() { return rep_ ? ids(rep_) : nullptr; }
  const int32_t* data() const { return rep_ ? ids(rep_) : nullptr; }
  const int32_t* begin() const { return data(); }
  const int32_t* end() const { return data() + size(); }
  int32_t& operator[](size_t i) { return ids(rep_)[i]; }
  int32_t operator[](size_t i) const { return ids(rep_)[i]; }
  int32_t back() const { return ids(rep_)[rep_->size - 1]; }

  // Callers reserve first (the manager plans every call before mutating), so running out is a bug.
  void push_back(int32_t b) {
    if (rep_ == nullptr || rep_->size == rep_->capacity) throw std::logic_error("block table is full");
    ids(rep_)[rep_->size++] = b;
  }
  void pop_back() { --rep_->size; }

 private:
  struct alignas(16) Rep {
    std::atomic<int32_t> refs{1};
    uint32_t size = 0;
    uint32_t capacity = 0;
  };
  static_assert(sizeof(Rep) == 16, "the ids follow the header, 16-byte aligned");

  static int32_t* ids(Rep* r) { return reinterpret_cast<int32_t*>(r + 1); }
  static const int32_t* ids(const Rep* r) { return reinterpret_cast<const int32_t*>(r + 1); }

  void drop() {
    if (rep_ == nullptr) return;
    // The sole owner frees without a read-modify-write: no other handle exists that could add one.
    if (rep_->refs.load(std::memory_order_acquire) == 1 ||
        rep_->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      rep_->~Rep();
      ::operator delete(rep_);
    }
    rep_ = nullptr;
  }

  Rep* rep_ = nullptr;
};

}  // namespace havoc
