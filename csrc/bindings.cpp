// The only file that includes pybind11: binds the declarations of csrc/*.h into havoc._C.
#include <optional>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "block_manager.h"
#include "build_info.h"

namespace py = pybind11;

namespace {

using IdArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using TokenArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

// Arguments arrive as py::object and are converted here. NOTE: an array_t<T, forcecast> parameter runs
// PyArray_FromAny even when the array already fits, ~0.3 us per argument (of a ~1 us append); an array of
// the right dtype and layout is taken as it is, anything else (lists, other dtypes) is converted.
template <class A>
A as_array(const py::handle& h, const char* what) {
  if (A::check_(h)) return py::reinterpret_borrow<A>(h);
  A a = A::ensure(h);
  if (!a) {
    PyErr_Clear();
    throw py::type_error(std::string(what) + " must be an integer array or sequence");
  }
  return a;
}

// step()/append() with no copies return this read-only (0, 2) array instead of allocating one.
py::array empty_copies() {
  static py::array* empty = [] {
    auto* a = new py::array(py::array_t<int64_t>(std::vector<py::ssize_t>{0, 2}));  // leaked on purpose:
    py::detail::array_proxy(a->ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;  // outlives
    return a;                                                                  // interpreter teardown order
  }();
  return *empty;
}

// Hand a vector's buffer to NumPy without copying: the array's base owns the vector.
template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v, std::vector<py::ssize_t> shape) {
  auto* owned = new std::vector<T>(std::move(v));
  py::capsule base(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(std::move(shape), owned->data(), base);
}

template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
  const auto n = static_cast<py::ssize_t>(v.size());
  return to_numpy(std::move(v), {n});
}

void make_read_only(py::array& a) {
  py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
}

void require_1d(const py::array& a, const char* what) {
  if (a.ndim() != 1) throw py::value_error(std::string(what) + " must be one-dimensional");
}

py::dict stats_dict(const havoc::BlockManagerStats& s) {
  py::dict d;
  d["num_blocks"] = s.num_blocks;
  d["block_size"] = s.block_size;
  d["watermark_blocks"] = s.watermark_blocks;
  d["used"] = s.used;
  d["free"] = s.free;
  d["cached"] = s.cached;
  d["evictable"] = s.evictable;
  d["num_seqs"] = s.num_seqs;
  d["evictions"] = s.evictions;
  d["cow_copies"] = s.cow_copies;
  d["prefix_queries"] = s.prefix_queries;
  d["prefix_query_tokens"] = s.prefix_query_tokens;
  d["prefix_hit_tokens"] = s.prefix_hit_tokens;
  return d;
}

py::dict snapshot_dict(const havoc::BlockManagerSnapshot& s) {
  py::dict d;
  d["clock"] = s.clock;
  d["free_list"] = s.free_list;
  d["ref"] = s.ref;
  py::dict cached;
  for (const auto& c : s.cached) {
    py::dict e;
    e["parent"] = c.parent;
    e["namespace"] = c.ns;
    e["key"] = c.key;
    e["children"] = c.children;
    e["ref"] = c.ref;
    e["stamp"] = c.stamp;
    e["tokens"] = py::tuple(py::cast(c.tokens));
    cached[py::int_(c.block)] = e;
  }
  d["cached"] = cached;
  py::list leaves;
  for (const auto& [stamp, b] : s.evictable_leaves) leaves.append(py::make_tuple(stamp, b));
  d["evictable_leaves"] = leaves;
  py::dict seqs;
  for (const auto& q : s.seqs) {
    py::dict e;
    e["length"] = q.length;
    e["namespace"] = q.ns;
    e["table"] = q.table;
    e["tokens"] = q.tokens;
    seqs[py::int_(q.id)] = e;
  }
  d["seqs"] = seqs;
  d["stats"] = stats_dict(s.stats);
  return d;
}

py::tuple copies_and_slots(py::array slots, const std::vector<havoc::BlockCopy>& copies) {
  if (copies.empty()) return py::make_tuple(std::move(slots), empty_copies());
  py::array_t<int64_t> c({static_cast<py::ssize_t>(copies.size()), py::ssize_t{2}});
  auto w = c.mutable_unchecked<2>();
  for (size_t i = 0; i < copies.size(); ++i) {
    w(i, 0) = copies[i].src;
    w(i, 1) = copies[i].dst;
  }
  return py::make_tuple(std::move(slots), std::move(c));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "havoc's compiled extension (no libtorch): build diagnostics and the paged KV cache's block "
            "manager. Use it through havoc.block_manager.";
  m.def("build_info", []() {
        py::dict d;
        for (const auto& kv : havoc::build_info()) d[py::str(kv.first)] = py::str(kv.second);
        return d;
      },
      "What the extension was compiled with: compiler, flags, OpenMP, SIMD baseline.");
  m.def("cpu_features", &havoc::cpu_features, "SIMD features of this CPU, detected at run time.");
  m.def("runtime_simd_level", &havoc::runtime_simd_level,
        "The widest SIMD level the run-time dispatcher picks on this CPU.");
  m.def("max_threads", &havoc::max_threads, "Threads OpenMP would use (1 without OpenMP).");

  // The Python classes live in havoc.errors (HavocError plus the builtin a caller expects); look them up
  // at throw time so that importing _C never imports the package's heavier modules.
  py::register_exception_translator([](std::exception_ptr p) {
    auto raise = [](const char* cls_name, PyObject* fallback, const char* what) {
      py::object cls;
      try {
        cls = py::module_::import("havoc.errors").attr(cls_name);
      } catch (py::error_already_set&) {
        PyErr_SetString(fallback, what);
        return;
      }
      PyErr_SetString(cls.ptr(), what);
    };
    try {
      if (p) std::rethrow_exception(p);
    } catch (const havoc::OutOfBlocks& e) {
      raise("OutOfBlocksError", PyExc_MemoryError, e.what());
    } catch (const havoc::UnknownSequence& e) {
      raise("UnknownSequenceError", PyExc_KeyError, e.what());
    }
  });

  using havoc::BlockManager;
  py::class_<BlockManager>(m, "BlockManager", R"doc(
Paged KV cache block manager (C++). See havoc.block_manager for the design, the view lifetimes and the
thread-safety contract; PyBlockManager there is the pure-Python model with the same API.
)doc")
      .def(py::init<int64_t, int64_t, double, int>(), py::arg("num_blocks"), py::arg("block_size"),
           py::kw_only(), py::arg("watermark") = 0.0, py::arg("hash_bits") = 64,
           "Pool of num_blocks blocks of block_size token slots. watermark: fraction of the pool "
           "can_allocate() keeps in reserve. hash_bits < 64 truncates block keys (a test hook that forces "
           "hash collisions).")
      .def_property_readonly("num_blocks", &BlockManager::num_blocks)
      .def_property_readonly("block_size", &BlockManager::block_size)
      .def_property_readonly("watermark_blocks", &BlockManager::watermark_blocks)
      .def(
          "add",
          [](BlockManager& self, int64_t seq_id, const py::object& tokens_obj, const std::string& ns) {
            auto tokens = as_array<TokenArray>(tokens_obj, "tokens");
            require_1d(tokens, "tokens");
            py::gil_scoped_release nogil;
            return self.add(seq_id, tokens.data(), tokens.shape(0), ns);
          },
          py::arg("seq_id"), py::arg("tokens"), py::arg("namespace") = "",
          "Add a sequence holding `tokens`; returns how many leading tokens are served by the prefix "
          "cache (a multiple of block_size, always < len(tokens)). Raises OutOfBlocksError (nothing "
          "changed) or ValueError if seq_id exists.")
      .def(
          "step",
          [](BlockManager& self, const py::object& ids_obj, const py::object& tokens_obj) {
            auto seq_ids = as_array<IdArray>(ids_obj, "seq_ids");
            auto tokens = as_array<TokenArray>(tokens_obj, "tokens");
            require_1d(seq_ids, "seq_ids");
            const int64_t n = seq_ids.shape(0);
            int64_t t = 0;
            if (tokens.ndim() == 1 && tokens.shape(0) == n)
              t = 1;
            else if (tokens.ndim() == 2 && tokens.shape(0) == n)
              t = tokens.shape(1);
            else
              throw py::value_error("tokens must have shape (len(seq_ids),) or (len(seq_ids), t)");
            std::vector<py::ssize_t> shape(tokens.shape(), tokens.shape() + tokens.ndim());
            py::array_t<int64_t> slots(shape);
            int64_t* out = slots.mutable_data();
            std::vector<havoc::BlockCopy> copies;
            {
              py::gil_scoped_release nogil;
              self.step(seq_ids.data(), n, tokens.data(), t, out, copies);
            }
            return copies_and_slots(std::move(slots), copies);
          },
          py::arg("seq_ids"), py::arg("tokens"),
          "Plan one decode step: seq_ids[i] appends tokens[i] (shape (n,) or (n, t)). Returns (slots, "
          "copies): int64 slots shaped like tokens, and an int64 (k, 2) array of (src, dst) block copies "
          "to make before writing the slots. Releases the GIL.")
      .def(
          "append",
          [](BlockManager& self, int64_t seq_id, const py::object& tokens_obj) {
            auto tokens = as_array<TokenArray>(tokens_obj, "tokens");
            require_1d(tokens, "tokens");
            const int64_t t = tokens.shape(0);
            py::array_t<int64_t> slots(t);
            int64_t* out = slots.mutable_data();
            std::vector<havoc::BlockCopy> copies;
            if (t >= 256) {  // releasing the GIL costs ~0.1 us: worth it for a prefill chunk, not a token
              py::gil_scoped_release nogil;
              self.step(&seq_id, 1, tokens.data(), t, out, copies);
            } else {
              self.step(&seq_id, 1, tokens.data(), t, out, copies);
            }
            return copies_and_slots(std::move(slots), copies);
          },
          py::arg("seq_id"), py::arg("tokens"),
          "Append tokens to one sequence; returns (slots, copies) as step() does.")
      .def("truncate", &BlockManager::truncate, py::arg("seq_id"), py::arg("n_tokens"),
           "Keep the first n_tokens tokens of a sequence.")
      .def("free", &BlockManager::free, py::arg("seq_id"), "Drop a sequence, releasing its blocks.")
      .def("fork", &BlockManager::fork, py::arg("parent_id"), py::arg("child_id"),
           "New sequence child_id sharing every block of parent_id (copy-on-write).")
      .def(
          "evict",
          [](BlockManager& self, int64_t n_blocks) {
            py::gil_scoped_release nogil;
            return self.evict(n_blocks);
          },
          py::arg("n_blocks"),
          "Drop up to n_blocks unreferenced cached blocks (LRU leaves first); returns how many.")
      .def(
          "lookup",
          [](const BlockManager& self, const py::object& tokens_obj, const std::string& ns) {
            auto tokens = as_array<TokenArray>(tokens_obj, "tokens");
            require_1d(tokens, "tokens");
            std::vector<int32_t> hits;
            {
              py::gil_scoped_release nogil;
              hits = self.lookup(tokens.data(), tokens.shape(0), ns);
            }
            return to_numpy(std::move(hits));
          },
          py::arg("tokens"), py::arg("namespace") = "",
          "Cached blocks matching the leading whole blocks of tokens (read-only: no counters, no LRU).")
      .def("can_allocate", &BlockManager::can_allocate, py::arg("n_tokens"),
           "Whether a new sequence of n_tokens fits and leaves the watermark free.")
      .def("__contains__", &BlockManager::contains, py::arg("seq_id"))
      .def("length", &BlockManager::length, py::arg("seq_id"))
      .def("seq_ids", &BlockManager::seq_ids, "Ids of the sequences held, sorted.")
      .def(
          "block_table",
          [](const BlockManager& self, int64_t seq_id) {
            havoc::TableView v = self.table(seq_id);
            using Holder = std::shared_ptr<const std::vector<int32_t>>;
            auto* holder = new Holder(std::move(v.storage));
            py::capsule base(holder, [](void* p) { delete static_cast<Holder*>(p); });
            py::array a = py::array_t<int32_t>({static_cast<py::ssize_t>(v.size)}, v.data, base);
            make_read_only(a);
            return a;
          },
          py::arg("seq_id"),
          "Zero-copy read-only int32 view of a sequence's block table. It never dangles; its contents "
          "are the sequence's table until that sequence is next mutated.")
      .def(
          "slots",
          [](const BlockManager& self, int64_t seq_id, int64_t start, std::optional<int64_t> end) {
            return to_numpy(self.slots(seq_id, start, end));
          },
          py::arg("seq_id"), py::arg("start") = 0, py::arg("end") = py::none(),
          "int64 slots of positions [start, end) of a sequence (end defaults to its length).")
      .def(
          "tokens", [](const BlockManager& self, int64_t seq_id) { return to_numpy(self.tokens(seq_id)); },
          py::arg("seq_id"), "The sequence's token ids, read back from its blocks.")
      .def(
          "block_tokens",
          [](const BlockManager& self, int64_t block) { return to_numpy(self.block_tokens(block)); },
          py::arg("block"), "The block_size token ids stored in a block (garbage past its fill).")
      .def(
          "block_tables",
          [](const BlockManager& self, const py::object& ids_obj, int32_t pad, int64_t width) {
            auto seq_ids = as_array<IdArray>(ids_obj, "seq_ids");
            require_1d(seq_ids, "seq_ids");
            const int64_t n = seq_ids.shape(0);
            std::vector<int32_t> tables, lengths;
            int64_t w = 0;
            {
              py::gil_scoped_release nogil;
              self.padded_tables(seq_ids.data(), n, pad, width, tables, w, lengths);
            }
            return py::make_tuple(to_numpy(std::move(tables), {n, w}), to_numpy(std::move(lengths)));
          },
          py::arg("seq_ids"), py::kw_only(), py::arg("pad") = 0, py::arg("min_width") = 0,
          "Padded int32 tables (n, width) and int32 lengths (n,) for a batch. Releases the GIL.")
      .def(
          "block_tables_csr",
          [](const BlockManager& self, const py::object& ids_obj) {
            auto seq_ids = as_array<IdArray>(ids_obj, "seq_ids");
            require_1d(seq_ids, "seq_ids");
            std::vector<int32_t> indptr, indices, last_len;
            {
              py::gil_scoped_release nogil;
              self.csr_tables(seq_ids.data(), seq_ids.shape(0), indptr, indices, last_len);
            }
            return py::make_tuple(to_numpy(std::move(indptr)), to_numpy(std::move(indices)),
                                  to_numpy(std::move(last_len)));
          },
          py::arg("seq_ids"),
          "CSR int32 (indptr (n+1,), indices (nnz,), last_block_len (n,)) for a batch. Releases the GIL.")
      .def("stats", [](const BlockManager& self) { return stats_dict(self.stats()); },
           "Counters: used/free/cached/evictable blocks, evictions, COW copies, prefix queries and hits.")
      .def("snapshot", [](const BlockManager& self) { return snapshot_dict(self.snapshot()); },
           "The full state as plain Python objects (for tests).")
      .def(
          "check_invariants",
          [](const BlockManager& self) {
            py::gil_scoped_release nogil;
            self.check_invariants();
          },
          "Recompute every invariant; raise RuntimeError naming the first one broken.");
}
