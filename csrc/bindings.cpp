// The only file that includes pybind11: binds the declarations of csrc/*.h into havoc._C.
#include <algorithm>
#include <memory>
#include <optional>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "attention.h"
#include "block_manager.h"
#include "build_info.h"
#include "cpu_decode.h"
#include "elementwise.h"
#include "paged_attention.h"

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
  if (copies.empty()) {
    PyObject* t = PyTuple_Pack(2, slots.ptr(), empty_copies().ptr());
    if (t == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::tuple>(t);
  }
  py::array_t<int64_t> c({static_cast<py::ssize_t>(copies.size()), py::ssize_t{2}});
  auto w = c.mutable_unchecked<2>();
  for (size_t i = 0; i < copies.size(); ++i) {
    w(i, 0) = copies[i].src;
    w(i, 1) = copies[i].dst;
  }
  return py::make_tuple(std::move(slots), std::move(c));
}

// --- vectorcall fast paths of the single-sequence calls ---------------------------------------------------
// append/fork/free of one sequence do 0.1-0.2 us of work; pybind11's generic dispatcher (argument
// loaders, overload records, keyword matching) costs about as much again per call. These METH_FASTCALL
// methods replace them on the class for positional calls and hand anything else (keywords, tokens that are
// not a C-contiguous int32 vector) to the pybind11 binding kept as `_<name>`, so both paths share one
// contract, one error translation and one docstring.
const py::detail::type_info* g_block_manager_type = nullptr;

havoc::BlockManager* block_manager_of(PyObject* self) {
  if (g_block_manager_type == nullptr || !PyObject_TypeCheck(self, g_block_manager_type->type)) {
    PyErr_SetString(PyExc_TypeError, "expected a havoc._C.BlockManager");
    return nullptr;
  }
  auto vh = reinterpret_cast<py::detail::instance*>(self)->get_value_and_holder(g_block_manager_type);
  if (!vh.holder_constructed()) {
    PyErr_SetString(PyExc_TypeError, "BlockManager.__init__ has not run on this object");
    return nullptr;
  }
  return vh.value_ptr<havoc::BlockManager>();
}

bool int64_arg(PyObject* o, int64_t* out) {
  if (!PyLong_Check(o)) return false;  // NumPy integers and the like take the pybind11 path
  long long v = PyLong_AsLongLong(o);
  if (v == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    return false;
  }
  *out = v;
  return true;
}

PyObject* slow_call(PyObject* self, const char* name, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  PyObject* fn = PyObject_GetAttrString(self, name);
  if (fn == nullptr) return nullptr;
  PyObject* r = PyObject_Vectorcall(fn, args, nargsf, kwnames);
  Py_DECREF(fn);
  return r;
}

template <class F>
PyObject* guarded(F&& f) {
  try {
    return f();
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (...) {
    py::detail::try_translate_exceptions();  // the module's translator, then pybind11's standard ones
  }
  return nullptr;
}

// A fresh int64 vector straight from NumPy's C API: py::array_t's constructor (shape vectors, descriptor
// lookup, a strides computation) cost ~0.1 us, a third of a one-token append.
py::array new_int64_vector(int64_t n) {
  const auto& api = py::detail::npy_api::get();
  PyObject* descr = api.PyArray_DescrFromType_(py::detail::npy_api::NPY_INT64_);  // stolen below
  Py_intptr_t dims[1] = {static_cast<Py_intptr_t>(n)};
  PyObject* a = api.PyArray_NewFromDescr_(api.PyArray_Type_, descr, 1, dims, nullptr, nullptr, 0, nullptr);
  if (a == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::array>(a);
}

// append()'s slots vector, recycled: the last one handed out is kept, and when the caller has dropped it
// (we hold the only reference, so no one can observe the reuse) and it is still the plain int64 vector it
// was made as, the next append of as many tokens returns it again with new contents. Creating a NumPy
// array cost ~130 ns of a ~280 ns one-token append (perf: 250 vs 116 ns with and without it); a decode
// loop that reads the slots and moves on never allocates one after the first. Guarded by the GIL, which
// every caller holds.
PyObject* g_spare_slots = nullptr;

py::array recycled_int64_vector(int64_t n) {
#ifndef Py_GIL_DISABLED
  if (g_spare_slots != nullptr && Py_REFCNT(g_spare_slots) == 1) {
    const auto& api = py::detail::npy_api::get();
    const auto* a = py::detail::array_proxy(g_spare_slots);
    constexpr int need = py::detail::npy_api::NPY_ARRAY_OWNDATA_ | py::detail::npy_api::NPY_ARRAY_WRITEABLE_ |
                         py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_;
    if (Py_TYPE(g_spare_slots) == api.PyArray_Type_ && a->nd == 1 && a->dimensions[0] == n &&
        a->strides[0] == 8 && a->base == nullptr && (a->flags & need) == need &&
        py::detail::array_descriptor_proxy(a->descr)->type_num == py::detail::npy_api::NPY_INT64_)
      return py::reinterpret_borrow<py::array>(g_spare_slots);
  }
#endif
  py::array fresh = new_int64_vector(n);
#ifndef Py_GIL_DISABLED
  Py_XDECREF(g_spare_slots);
  g_spare_slots = fresh.inc_ref().ptr();
#endif
  return fresh;
}

PyObject* fast_free(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  int64_t id;
  havoc::BlockManager* bm;
  if (kwnames != nullptr || nargs != 1 || !int64_arg(args[0], &id) || (bm = block_manager_of(self)) == nullptr)
    return slow_call(self, "_free", args, static_cast<size_t>(nargs), kwnames);
  return guarded([&] {
    bm->free(id);
    Py_RETURN_NONE;
  });
}

PyObject* fast_fork(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  int64_t parent, child;
  havoc::BlockManager* bm;
  if (kwnames != nullptr || nargs != 2 || !int64_arg(args[0], &parent) || !int64_arg(args[1], &child) ||
      (bm = block_manager_of(self)) == nullptr)
    return slow_call(self, "_fork", args, static_cast<size_t>(nargs), kwnames);
  return guarded([&] {
    bm->fork(parent, child);
    Py_RETURN_NONE;
  });
}

// A one-dimensional, C-contiguous, aligned, native-order int32 NumPy array, read straight from the object's
// fields.
// NOTE: py::isinstance<py::array_t<int32_t>> builds a dtype object per call to compare against (~40 ns).
bool is_int32_vector(PyObject* o) {
  const auto& api = py::detail::npy_api::get();
  if (!PyObject_TypeCheck(o, api.PyArray_Type_)) return false;
  const auto* arr = py::detail::array_proxy(o);
  constexpr int need = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
  if (arr->nd != 1 || (arr->flags & need) != need) return false;
  const auto* d = py::detail::array_descriptor_proxy(arr->descr);
  return d->type_num == py::detail::npy_api::NPY_INT32_ && d->byteorder == '=';  // '<'/'>' spelled out: slow path
}

PyObject* fast_append(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  int64_t id;
  havoc::BlockManager* bm;
  // Anything else (other ranks or dtypes, lists, keywords) gets the binding, its conversions and its errors;
  // chunks of 256+ tokens go there too, to release the GIL.
  if (kwnames != nullptr || nargs != 2 || !int64_arg(args[0], &id) || !is_int32_vector(args[1]) ||
      py::detail::array_proxy(args[1])->dimensions[0] >= 256 || (bm = block_manager_of(self)) == nullptr)
    return slow_call(self, "_append", args, static_cast<size_t>(nargs), kwnames);
  auto* arr = py::detail::array_proxy(args[1]);
  return guarded([&]() -> PyObject* {
    const int64_t t = arr->dimensions[0];
    py::array slots = recycled_int64_vector(t);
    std::vector<havoc::BlockCopy> copies;
    bm->step(&id, 1, reinterpret_cast<const int32_t*>(arr->data), t,
             reinterpret_cast<int64_t*>(py::detail::array_proxy(slots.ptr())->data), copies);
    return copies_and_slots(std::move(slots), copies).release().ptr();
  });
}

PyMethodDef g_fast_methods[] = {
    {"free", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_free)), METH_FASTCALL | METH_KEYWORDS,
     "free(seq_id): drop a sequence, releasing its blocks."},
    {"fork", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_fork)), METH_FASTCALL | METH_KEYWORDS,
     "fork(parent_id, child_id): new sequence child_id sharing every block of parent_id (copy-on-write)."},
    {"append", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_append)), METH_FASTCALL | METH_KEYWORDS,
     "append(seq_id, tokens): append tokens to one sequence; returns (slots, copies) as step() does."},
};

// Move the pybind11 bindings of the fast-pathed methods to `_<name>` and install the fast ones.
void install_fast_methods(py::handle cls) {
  g_block_manager_type = py::detail::get_type_info(reinterpret_cast<PyTypeObject*>(cls.ptr()));
  for (auto& def : g_fast_methods) {
    cls.attr(("_" + std::string(def.ml_name)).c_str()) = cls.attr(def.ml_name);
    PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), &def);
    if (descr == nullptr) throw py::error_already_set();
    cls.attr(def.ml_name) = py::reinterpret_steal<py::object>(descr);
  }
}

// --- buffers of the paged-cache kernels ----------------------------------------------------------------

using I32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Stride of dimension i in elements; the byte stride must be a whole number of elements.
int64_t elem_stride(const py::array& a, py::ssize_t i, const char* what) {
  const auto bytes = a.strides(i), item = a.itemsize();
  if (bytes % item != 0) throw py::value_error(std::string(what) + " has a stride that is not a whole element");
  return static_cast<int64_t>(bytes / item);
}

void require_writeable(const py::array& a, const char* what) {
  if (!a.writeable()) throw py::value_error(std::string(what) + " is read-only");
}

// A K or V pool: (num_blocks, block_size, kv_heads, head_dim), C-contiguous, writeable.
havoc::PoolShape pool_shape(const py::array& pool, const char* what) {
  if (pool.ndim() != 4)
    throw py::value_error(std::string(what) + " must be (num_blocks, block_size, kv_heads, head_dim), got shape " +
                          shape_str(pool));
  if (!(pool.flags() & py::array::c_style)) throw py::value_error(std::string(what) + " must be C-contiguous");
  havoc::PoolShape s;
  s.num_blocks = pool.shape(0);
  s.block_size = pool.shape(1);
  s.kv_heads = pool.shape(2);
  s.head_dim = pool.shape(3);
  return s;
}

bool same_shape(const havoc::PoolShape& a, const havoc::PoolShape& b) {
  return a.num_blocks == b.num_blocks && a.block_size == b.block_size && a.kv_heads == b.kv_heads &&
         a.head_dim == b.head_dim;
}

void require_same_dtype(const py::array& a, const py::array& b, const char* what_a, const char* what_b) {
  if (!a.dtype().is(b.dtype()))
    throw py::value_error(std::string(what_a) + " and " + std::string(what_b) + " have different dtypes (" +
                          std::string(py::str(a.dtype())) + " vs " + std::string(py::str(b.dtype())) + ")");
}

// (rows, kv_heads, head_dim) K or V rows with contiguous head_dim.
havoc::RowsView rows_view(const py::array& a, const havoc::PoolShape& shape, int64_t n, const char* what) {
  if (a.ndim() != 3 || a.shape(0) != n || a.shape(1) != shape.kv_heads || a.shape(2) != shape.head_dim)
    throw py::value_error(std::string(what) + " must be (" + std::to_string(n) + ", " +
                          std::to_string(shape.kv_heads) + ", " + std::to_string(shape.head_dim) + "), got " +
                          shape_str(a));
  if (shape.head_dim > 1 && elem_stride(a, 2, what) != 1)
    throw py::value_error(std::string(what) + " must be contiguous along head_dim");
  return {a.data(), elem_stride(a, 0, what), elem_stride(a, 1, what)};
}

havoc::KVDType kv_dtype(const py::array& a, const std::string& name) {
  if (name == "float32") {
    if (a.dtype().kind() != 'f' || a.itemsize() != 4)
      throw py::value_error("dtype float32 needs float32 buffers, got " + std::string(py::str(a.dtype())));
    return havoc::KVDType::kFloat32;
  }
  if (name == "bfloat16") {  // NumPy has no bfloat16: the bits come as a 16-bit integer view
    if ((a.dtype().kind() != 'i' && a.dtype().kind() != 'u') || a.itemsize() != 2)
      throw py::value_error("dtype bfloat16 needs its bits as an int16/uint16 buffer, got " +
                            std::string(py::str(a.dtype())));
    return havoc::KVDType::kBFloat16;
  }
  throw py::value_error("dtype must be 'float32' or 'bfloat16', got '" + name + "'");
}

// q, k, v and out of attention / attention_varlen: nd dimensions each (`layout` names them), one dtype
// (returned), k and v alike, out shaped like q and writable, the feature dimension contiguous in all four.
havoc::KVDType attention_operands(const py::array& q, const py::array& k, const py::array& v, const py::array& out,
                                  const std::string& dtype, py::ssize_t nd, const char* layout) {
  const havoc::KVDType dt = kv_dtype(q, dtype);
  require_same_dtype(q, k, "q", "k");
  require_same_dtype(q, v, "q", "v");
  require_same_dtype(q, out, "q", "out");
  if (q.ndim() != nd || k.ndim() != nd || v.ndim() != nd)
    throw py::value_error(std::string("q, k and v must be ") + layout + ", got " + shape_str(q) + ", " + shape_str(k) + " and " +
                          shape_str(v));
  if (!std::equal(k.shape(), k.shape() + nd, v.shape()))
    throw py::value_error("k and v have different shapes: " + shape_str(k) + " and " + shape_str(v));
  if (out.ndim() != nd || !std::equal(q.shape(), q.shape() + nd, out.shape()))
    throw py::value_error("out must be shaped like q " + shape_str(q) + ", got " + shape_str(out));
  require_writeable(out, "out");
  for (const auto& [t, what] : {std::pair<const py::array*, const char*>{&q, "q"}, {&k, "k"}, {&v, "v"}, {&out, "out"}})
    if (t->shape(nd - 1) > 1 && elem_stride(*t, nd - 1, what) != 1)
      throw py::value_error(std::string(what) + " must be contiguous along head_dim");
  return dt;
}

// --- buffers of the decode kernels ---------------------------------------------------------------------

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;

// A weight given as (array, dtype, scales, group[, cols]): a C-contiguous 2-D array of float32 ("float32"),
// of bf16 bits as int16/uint16 ("bfloat16") or of uint8 ("int8", "int8_weight_only": the bytes q + 128 of
// rows padded as cpu_decode.h describes, so the array is (rows, cols rounded up to 64) and `cols` gives the
// real input count; (rows, groups) float32 scales; "int8_interleaved": "int8" in the interleaved layout).
havoc::WeightView weight_view(const py::array& w, const std::string& dtype, const py::object& scales, int64_t group,
                              int64_t cols, const std::string& what) {
  if (w.ndim() != 2) throw py::value_error(what + " must be 2-D (out, in), got " + shape_str(w));
  if (!(w.flags() & py::array::c_style)) throw py::value_error(what + " must be C-contiguous");
  havoc::WeightView v;
  v.data = w.data();
  v.rows = w.shape(0);
  v.cols = w.shape(1);
  const char kind = w.dtype().kind();
  if (dtype == "float32") {
    if (kind != 'f' || w.itemsize() != 4) throw py::value_error(what + ": dtype float32 needs a float32 array");
    v.dtype = havoc::WeightDType::kFloat32;
  } else if (dtype == "bfloat16") {
    if ((kind != 'i' && kind != 'u') || w.itemsize() != 2)
      throw py::value_error(what + ": dtype bfloat16 needs its bits as an int16/uint16 array");
    v.dtype = havoc::WeightDType::kBFloat16;
  } else if (dtype == "int8" || dtype == "int8_weight_only" || dtype == "int8_interleaved") {
    if (kind != 'u' || w.itemsize() != 1)
      throw py::value_error(what + ": dtype " + dtype + " needs a uint8 array (the bytes q + 128)");
    v.dtype = dtype == "int8_weight_only" ? havoc::WeightDType::kInt8WeightOnly : havoc::WeightDType::kInt8;
    v.interleaved = dtype == "int8_interleaved";
    if (group < 64 || group % 64) throw py::value_error(what + ": the int8 group must be a positive multiple of 64");
    if (v.interleaved && group != 64)
      throw py::value_error(what + ": the interleaved int8 layout takes groups of 64, got " + std::to_string(group));
    v.group = group;
    v.cols = cols;
    if (cols < 1 || v.ld() != w.shape(1))
      throw py::value_error(what + ": packed int8 rows of " + std::to_string(w.shape(1)) + " bytes do not hold " +
                            std::to_string(cols) + " inputs (cols rounded up to 64)");
    if (scales.is_none()) throw py::value_error(what + ": int8 weights need scales");
    auto s = py::reinterpret_borrow<py::array>(scales);
    if (s.dtype().kind() != 'f' || s.itemsize() != 4 || !(s.flags() & py::array::c_style) || s.ndim() != 2 ||
        s.shape(0) != v.rows || s.shape(1) != v.groups())
      throw py::value_error(what + ": scales must be C-contiguous float32 (" + std::to_string(v.rows) + ", " +
                            std::to_string(v.groups()) + "), got " + shape_str(s));
    v.scales = static_cast<const float*>(s.data());
  } else {
    throw py::value_error(what + ": dtype must be 'float32', 'bfloat16', 'int8', 'int8_interleaved' or "
                          "'int8_weight_only', got '" + dtype + "'");
  }
  return v;
}

// A float32 (rows, cols) activation matrix with contiguous rows; returns its row stride in elements.
int64_t f32_rows(const py::array& a, const char* what) {
  if (a.ndim() != 2 || a.dtype().kind() != 'f' || a.itemsize() != 4)
    throw py::value_error(std::string(what) + " must be a 2-D float32 array, got " + shape_str(a) + " " +
                          std::string(py::str(a.dtype())));
  if (a.shape(1) > 1 && elem_stride(a, 1, what) != 1)
    throw py::value_error(std::string(what) + " must be contiguous along its last dimension");
  const int64_t ld = elem_stride(a, 0, what);
  if (a.shape(0) > 1 && ld < a.shape(1)) throw py::value_error(std::string(what) + ": rows overlap");
  return a.shape(0) > 1 ? ld : a.shape(1);
}

bool kv_dtype_check_failed(const py::array& a, havoc::KVDType kv) {
  if (kv == havoc::KVDType::kFloat32) return !(a.dtype().kind() == 'f' && a.itemsize() == 4);
  return !((a.dtype().kind() == 'i' || a.dtype().kind() == 'u') && a.itemsize() == 2);
}

// The decoder and the Python objects whose buffers it points into (kept alive with it).
struct PyDecoder {
  std::unique_ptr<havoc::Decoder> decoder;
  std::vector<py::object> keep;
};

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "havoc's compiled extension (no libtorch): build diagnostics, the paged KV cache's block "
            "manager and its CPU kernels. Use it through havoc.block_manager and havoc.paged.";
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


  // --- the decode kernels ------------------------------------------------------------------------------
  m.def("linear_isas", &havoc::linear_isas, "Variants of the decode kernels this CPU runs, narrowest first.");
  m.def("linear_variants", &havoc::linear_variants,
        "Every variant of the decode kernels, narrowest first, whether or not this CPU runs it.");
  m.def("linear_auto", &havoc::linear_auto, "The variant 'auto' runs (linear_isas()'s last, passing over "
        "avx512_bf16 where vdpbf16ps does not pay: bf16_dot_rate).");
  m.def("bf16_dot_rate", &havoc::bf16_dot_rate,
        "vdpbf16ps's issue rate on this core as a fraction of the zmm FMA's, measured once per process (0 "
        "without avx512_bf16); 'auto' runs it where the rate is at least bf16_dot_pays_at.");
  m.attr("bf16_dot_pays_at") = havoc::kBf16DotPays;
  m.def("linear_variant_missing", &havoc::linear_variant_missing, py::arg("variant"),
        "Why a variant cannot run here ('' when it can).");
  m.def(
      "linear_kernel",
      [](const std::string& variant, const std::string& dtype) {
        const std::vector<std::pair<std::string, havoc::WeightDType>> names = {
            {"float32", havoc::WeightDType::kFloat32}, {"bfloat16", havoc::WeightDType::kBFloat16},
            {"int8", havoc::WeightDType::kInt8}, {"int8_weight_only", havoc::WeightDType::kInt8WeightOnly}};
        for (const auto& n : names)
          if (n.first == dtype) return havoc::linear_kernel(variant, n.second);
        throw py::value_error("dtype must be 'float32', 'bfloat16', 'int8' or 'int8_weight_only', got '" + dtype + "'");
      },
      py::arg("variant"), py::arg("dtype"), "What a kernel variant runs for a weight format, in words.");
  m.def(
      "collapse_hugepages",
      [](py::array a) {
        require_writeable(a, "array");
        if (!(a.flags() & py::array::c_style)) throw py::value_error("the array must be C-contiguous");
        void* p = a.mutable_data();
        const int64_t bytes = a.nbytes();
        py::gil_scoped_release nogil;
        return havoc::collapse_hugepages(p, bytes);
      },
      py::arg("array"),
      "Back the whole 2 MiB pages of a C-contiguous array's memory with transparent huge pages "
      "(madvise MADV_COLLAPSE, Linux 6.1+); returns the bytes collapsed (0 where the OS cannot).");
  m.def("decoder_features", &havoc::decoder_features,
        "The model features the whole-step Decoder implements (havoc.cpu_decode checks a model against them).");
  m.def("batch1_streams", &havoc::batch1_streams,
        "Weight rows a thread streams at once in a product of one activation row: 1 or 4 (see cpu_decode.h).");
  m.def("set_batch1_streams", &havoc::set_batch1_streams, py::arg("streams"),
        "Set batch1_streams: 1, 4, or 0 to choose by the CPU's vendor again (the same results either way).");
  m.def("attention_isa_for", &havoc::attention_isa_for, py::arg("variant"),
        "The paged-attention variant a decode step runs with this decode-kernel variant ('auto' resolves).");
  m.def(
      "interleave_int8",
      [](const py::array& w, bool inverse) {
        if (w.ndim() != 2 || w.dtype().kind() != 'u' || w.itemsize() != 1 || !(w.flags() & py::array::c_style))
          throw py::value_error("interleave_int8 takes a C-contiguous 2-D uint8 array, got " + shape_str(w));
        if (w.shape(1) < 64 || w.shape(1) % 64)
          throw py::value_error("int8 rows must be a positive multiple of 64 bytes, got " + shape_str(w));
        py::array_t<uint8_t> out(std::vector<py::ssize_t>{w.shape(0), w.shape(1)});
        uint8_t* op = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          havoc::interleave_int8_rows(static_cast<const uint8_t*>(w.data()), op, w.shape(0), w.shape(1), inverse);
        }
        return out;
      },
      py::arg("packed"), py::arg("inverse") = false,
      "int8 weight bytes (rows, K rounded up to 64) into the interleaved layout of csrc/cpu_decode.h (or back "
      "with inverse=True): a new array.");
  m.def("reads_interleaved", py::overload_cast<const std::string&>(&havoc::reads_interleaved), py::arg("variant"),
        "Whether the decode-kernel variant ('auto' resolves) reads int8 weights in the interleaved layout.");
  m.def(
      "quantize_rows_int8",
      [](const py::array& x, int64_t group) {
        const int64_t ldx = f32_rows(x, "x");
        const int64_t M = x.shape(0), K = x.shape(1), ld = (K + 63) / 64 * 64, ng = (K + group - 1) / std::max<int64_t>(group, 1);
        py::array_t<int8_t> q(std::vector<py::ssize_t>{M, ld});
        py::array_t<float> s(std::vector<py::ssize_t>{M, ng});
        py::array_t<int32_t> c(std::vector<py::ssize_t>{M, ng});
        int8_t* qp = q.mutable_data();
        float* sp = s.mutable_data();
        int32_t* cp = c.mutable_data();
        {
          py::gil_scoped_release nogil;
          havoc::quantize_rows_int8(static_cast<const float*>(x.data()), M, ldx, K, group, qp, sp, cp);
        }
        return py::make_tuple(q, s, c);
      },
      py::arg("x"), py::arg("group"),
      "The int8 format's activation quantization of x (M, K) float32, as the kernels compute it: (q (M, K "
      "rounded up to 64) int8, scales (M, groups) float32, corrections (M, groups) int32 = -128 * sum(q)).");
  m.def(
      "linear",
      [](const py::array& x, const py::array& w, const std::string& dtype, const py::object& scales, int64_t group,
         int64_t cols, const py::object& out_obj, bool accumulate, const std::string& isa) {
        const havoc::WeightView v = weight_view(w, dtype, scales, group, cols, "weight");
        const int64_t ldx = f32_rows(x, "x");
        if (x.shape(1) != v.cols)
          throw py::value_error("x has " + std::to_string(x.shape(1)) + " features but the weight takes " +
                                std::to_string(v.cols));
        py::array out = out_obj.is_none() ? py::array(py::array_t<float>(std::vector<py::ssize_t>{x.shape(0), v.rows}))
                                          : py::reinterpret_borrow<py::array>(out_obj);
        if (accumulate && out_obj.is_none()) throw py::value_error("accumulate needs an out array to add to");
        const int64_t ldy = f32_rows(out, "out");
        require_writeable(out, "out");
        if (out.shape(0) != x.shape(0) || out.shape(1) != v.rows)
          throw py::value_error("out must be (" + std::to_string(x.shape(0)) + ", " + std::to_string(v.rows) +
                                "), got " + shape_str(out));
        float* y = static_cast<float*>(out.mutable_data());
        {
          py::gil_scoped_release nogil;
          havoc::linear(static_cast<const float*>(x.data()), x.shape(0), ldx, v, y, ldy, accumulate, isa);
        }
        return out;
      },
      py::arg("x"), py::arg("weight"), py::arg("dtype"), py::arg("scales") = py::none(), py::arg("group") = 0,
      py::arg("cols") = 0, py::kw_only(), py::arg("out") = py::none(), py::arg("accumulate") = false,
      py::arg("isa") = "auto",
      "x @ weight.T with fp32 accumulation, into `out` (M, N) float32 (=, or += with accumulate) or a new "
      "array, which it returns: x (M, K) float32 with contiguous rows; weight (N, K) float32 / bf16 bits, or "
      "int8 bytes q + 128 (N, K rounded up to 64) with cols=K and (N, ceil(K / group)) scales ('int8': "
      "activations quantized to int8 per row and group; 'int8_weight_only': fp32 activations). isa: a "
      "kernel variant or 'auto'. Releases the GIL.");
  m.def(
      "linear_argmax",
      [](const py::array& x, const py::array& w, const std::string& dtype, const py::object& scales, int64_t group,
         int64_t cols, const std::string& isa) {
        const havoc::WeightView v = weight_view(w, dtype, scales, group, cols, "weight");
        const int64_t ldx = f32_rows(x, "x");
        if (x.shape(1) != v.cols)
          throw py::value_error("x has " + std::to_string(x.shape(1)) + " features but the weight takes " +
                                std::to_string(v.cols));
        const int64_t M = x.shape(0);
        py::array_t<int64_t> index(M);
        py::array_t<float> value(M);
        int64_t* ip = index.mutable_data();
        float* vp = value.mutable_data();
        {
          py::gil_scoped_release nogil;
          havoc::linear_argmax(static_cast<const float*>(x.data()), M, ldx, v, ip, vp, isa);
        }
        return py::make_tuple(index, value);
      },
      py::arg("x"), py::arg("weight"), py::arg("dtype"), py::arg("scales") = py::none(), py::arg("group") = 0,
      py::arg("cols") = 0, py::arg("isa") = "auto",
      "(argmax ids (M,) int64, maxima (M,) float32) of x @ weight.T without writing the product. Releases the GIL.");

  py::class_<PyDecoder>(m, "Decoder",
                        "A whole decode step of the havoc decoder over paged K/V pools in one call "
                        "(havoc.cpu_decode builds it from a model and a PagedKVCache).")
      .def(py::init([](const py::dict& cfg, const py::list& layers, const py::array& final_norm,
                       const py::tuple& embedding, const py::tuple& head, const std::string& kv_dtype,
                       const std::string& isa) {
             auto out = std::make_unique<PyDecoder>();
             havoc::DecoderConfig c;
             c.dim = cfg["dim"].cast<int64_t>();
             c.n_layers = cfg["n_layers"].cast<int64_t>();
             c.n_heads = cfg["n_heads"].cast<int64_t>();
             c.n_kv_heads = cfg["n_kv_heads"].cast<int64_t>();
             c.head_dim = cfg["head_dim"].cast<int64_t>();
             c.rotary_dim = cfg["rotary_dim"].cast<int64_t>();
             c.ffn_hidden = cfg["ffn_hidden"].cast<int64_t>();
             c.vocab_size = cfg["vocab_size"].cast<int64_t>();
             c.norm_eps = cfg["norm_eps"].cast<float>();
             c.rope_theta = cfg["rope_theta"].cast<double>();
             auto weight = [&](const py::handle& spec, const std::string& what) {
               auto t = py::reinterpret_borrow<py::tuple>(spec);
               if (t.size() != 4 && t.size() != 5) throw py::value_error(what + " must be (array, dtype, scales, group[, cols])");
               auto arr = py::reinterpret_borrow<py::array>(t[0]);
               out->keep.push_back(t);
               return weight_view(arr, t[1].cast<std::string>(), t[2], t[3].cast<int64_t>(),
                                  t.size() == 5 ? t[4].cast<int64_t>() : 0, what);
             };
             auto norm = [&](const py::handle& obj, const std::string& what) {
               auto a = py::reinterpret_borrow<py::array>(obj);
               if (a.ndim() != 1 || a.shape(0) != c.dim || a.dtype().kind() != 'f' || a.itemsize() != 4 ||
                   !(a.flags() & py::array::c_style))
                 throw py::value_error(what + " must be a contiguous float32 (" + std::to_string(c.dim) + ",) array");
               out->keep.push_back(a);
               return static_cast<const float*>(a.data());
             };
             const havoc::KVDType kv = kv_dtype == "bfloat16" ? havoc::KVDType::kBFloat16 : havoc::KVDType::kFloat32;
             if (kv_dtype != "float32" && kv_dtype != "bfloat16")
               throw py::value_error("kv_dtype must be 'float32' or 'bfloat16', got '" + kv_dtype + "'");
             std::vector<havoc::DecoderLayer> ls;
             havoc::PoolShape shape;
             for (size_t i = 0; i < layers.size(); ++i) {
               auto d = py::reinterpret_borrow<py::dict>(layers[i]);
               const std::string p = "layer " + std::to_string(i) + " ";
               havoc::DecoderLayer L;
               L.attention_norm = norm(d["attention_norm"], p + "attention_norm");
               L.ffn_norm = norm(d["ffn_norm"], p + "ffn_norm");
               L.wqkv = weight(d["wqkv"], p + "wqkv");
               L.wo = weight(d["wo"], p + "wo");
               L.w13 = weight(d["w13"], p + "w13");
               L.w2 = weight(d["w2"], p + "w2");
               auto kp = py::reinterpret_borrow<py::array>(d["k_pool"]);
               auto vp = py::reinterpret_borrow<py::array>(d["v_pool"]);
               const havoc::PoolShape s = pool_shape(kp, (p + "k_pool").c_str());
               if (!same_shape(s, pool_shape(vp, (p + "v_pool").c_str())) || (i > 0 && !same_shape(s, shape)))
                 throw py::value_error(p + "pools differ in shape from each other or from layer 0's");
               if (kv_dtype_check_failed(kp, kv) || kv_dtype_check_failed(vp, kv))
                 throw py::value_error(p + "pools are not " + kv_dtype);
               require_writeable(kp, (p + "k_pool").c_str());
               require_writeable(vp, (p + "v_pool").c_str());
               shape = s;
               L.k_pool = kp.mutable_data();
               L.v_pool = vp.mutable_data();
               out->keep.push_back(kp);
               out->keep.push_back(vp);
               ls.push_back(L);
             }
             if (ls.empty()) throw py::value_error("a decoder needs at least one layer");
             const float* fn = norm(final_norm, "final_norm");
             const havoc::WeightView e = weight(embedding, "embedding"), h = weight(head, "head");
             out->decoder = std::make_unique<havoc::Decoder>(c, std::move(ls), fn, e, h, kv, shape, isa);
             return out;
           }),
           py::arg("config"), py::arg("layers"), py::arg("final_norm"), py::arg("embedding"), py::arg("head"),
           py::arg("kv_dtype"), py::arg("isa") = "auto")
      .def(
          "step",
          [](PyDecoder& self, const py::object& tokens_obj, const py::object& positions_obj, const py::object& slots_obj,
             const py::object& tables_obj, const py::object& lengths_obj, const py::object& logits_obj,
             const py::object& next_obj, const py::object& logit_rows_obj, const py::object& argmax_rows_obj,
             const py::object& prompt_runs_obj) {
            auto tokens = as_array<IdArray>(tokens_obj, "tokens");
            auto positions = as_array<IdArray>(positions_obj, "positions");
            auto slots = as_array<IdArray>(slots_obj, "slots");
            auto tables = as_array<I32Array>(tables_obj, "block_tables");
            auto lengths = as_array<I32Array>(lengths_obj, "lengths");
            require_1d(tokens, "tokens");
            const int64_t n = tokens.shape(0);
            for (auto* a : {&positions, &slots})
              if (a->ndim() != 1 || a->shape(0) != n) throw py::value_error("positions and slots must be (batch,) like tokens");
            if (lengths.ndim() != 1 || lengths.shape(0) != n) throw py::value_error("lengths must be (batch,) int32");
            if (tables.ndim() != 2 || tables.shape(0) != n) throw py::value_error("block_tables must be (batch, width) int32");
            // Output rows: all n, or the listed ones (a prompt chunk needs only its last row's logits).
            IdArray logit_rows, argmax_rows;
            const int64_t* lr = nullptr;
            const int64_t* ar = nullptr;
            int64_t n_logit = n, n_argmax = n;
            if (!logit_rows_obj.is_none()) {
              logit_rows = as_array<IdArray>(logit_rows_obj, "logit_rows");
              require_1d(logit_rows, "logit_rows");
              lr = logit_rows.data(), n_logit = logit_rows.shape(0);
            }
            if (!argmax_rows_obj.is_none()) {
              argmax_rows = as_array<IdArray>(argmax_rows_obj, "argmax_rows");
              require_1d(argmax_rows, "argmax_rows");
              ar = argmax_rows.data(), n_argmax = argmax_rows.shape(0);
            }
            const int64_t V = self.decoder->config().vocab_size;
            float* lp = nullptr;
            int64_t* np_ = nullptr;
            if (!logits_obj.is_none()) {
              auto l = py::reinterpret_borrow<py::array>(logits_obj);
              if (l.ndim() != 2 || l.shape(0) != n_logit || l.shape(1) != V || l.dtype().kind() != 'f' ||
                  l.itemsize() != 4 || !(l.flags() & py::array::c_style))
                throw py::value_error("logits must be a C-contiguous float32 (" + std::to_string(n_logit) + ", " +
                                      std::to_string(V) + ") array, got " + shape_str(l));
              require_writeable(l, "logits");
              lp = static_cast<float*>(l.mutable_data());
            }
            if (!next_obj.is_none()) {
              auto t = py::reinterpret_borrow<py::array>(next_obj);
              if (t.ndim() != 1 || t.shape(0) != n_argmax || t.dtype().kind() != 'i' || t.itemsize() != 8 ||
                  !(t.flags() & py::array::c_style))
                throw py::value_error("next_tokens must be a contiguous int64 (" + std::to_string(n_argmax) + ",) array");
              require_writeable(t, "next_tokens");
              np_ = static_cast<int64_t*>(t.mutable_data());
            }
            IdArray runs;
            const int64_t* pr = nullptr;
            int64_t n_runs = 0;
            if (!prompt_runs_obj.is_none()) {
              runs = as_array<IdArray>(prompt_runs_obj, "prompt_runs");
              if (runs.ndim() != 2 || runs.shape(1) != 2)
                throw py::value_error("prompt_runs must be (runs, 2) int64 (first row, count), got " + shape_str(runs));
              pr = runs.data(), n_runs = runs.shape(0);
            }
            py::gil_scoped_release nogil;
            self.decoder->step(tokens.data(), positions.data(), n, slots.data(), tables.data(), tables.shape(1),
                               lengths.data(), lp, np_, lr, n_logit, ar, n_argmax, pr, n_runs);
          },
          py::arg("tokens"), py::arg("positions"), py::arg("slots"), py::arg("block_tables"), py::arg("lengths"),
          py::arg("logits") = py::none(), py::arg("next_tokens") = py::none(), py::arg("logit_rows") = py::none(),
          py::arg("argmax_rows") = py::none(), py::arg("prompt_runs") = py::none(),
          "One forward over token rows (a decode token per sequence, or several consecutive tokens of a "
          "sequence): writes each layer's K/V to the rows' slots, the logits (k, vocab) float32 into `logits` "
          "and/or the argmax ids into `next_tokens` (int64) for the rows listed in `logit_rows` / "
          "`argmax_rows` (default: every row). prompt_runs: (runs, 2) int64 (first row, count) of rows that "
          "are consecutive prompt tokens of one sequence, attended as a prefill (cpu_decode.h). Releases the GIL.");
  // Attention's split-K granularity in tokens: past it a sequence's attention is several work units.
  m.attr("Decoder").attr("split_tokens") = py::int_(havoc::Decoder::kSplitTokens);

  // --- the paged cache's CPU kernels ------------------------------------------------------------------
  m.def(
      "write_kv",
      [](py::array k_pool, py::array v_pool, const py::array& k, const py::array& v, const py::object& slots_obj) {
        const havoc::PoolShape shape = pool_shape(k_pool, "k_pool");
        if (!same_shape(shape, pool_shape(v_pool, "v_pool")))
          throw py::value_error("k_pool and v_pool have different shapes");
        require_writeable(k_pool, "k_pool");
        require_writeable(v_pool, "v_pool");
        require_same_dtype(k_pool, v_pool, "k_pool", "v_pool");
        require_same_dtype(k_pool, k, "k_pool", "k");
        require_same_dtype(k_pool, v, "k_pool", "v");
        auto slots = as_array<IdArray>(slots_obj, "slots");
        require_1d(slots, "slots");
        const int64_t n = slots.shape(0);
        const havoc::RowsView kr = rows_view(k, shape, n, "k"), vr = rows_view(v, shape, n, "v");
        py::gil_scoped_release nogil;
        havoc::write_kv(k_pool.mutable_data(), v_pool.mutable_data(), shape, k_pool.itemsize(), kr, vr,
                        slots.data(), n);
      },
      py::arg("k_pool"), py::arg("v_pool"), py::arg("k"), py::arg("v"), py::arg("slots"),
      "Write rows k[i], v[i] ((n, kv_heads, head_dim), head_dim contiguous) into slot slots[i] of the "
      "(num_blocks, block_size, kv_heads, head_dim) pools. Every slot is checked first: one outside the "
      "pool raises IndexError with nothing written. Releases the GIL.");
  m.def(
      "copy_blocks",
      [](const std::vector<py::array>& pools, const py::object& copies_obj) {
        auto copies = as_array<IdArray>(copies_obj, "copies");
        if (!(copies.ndim() == 2 && copies.shape(1) == 2) && !(copies.ndim() == 1 && copies.shape(0) == 0))
          throw py::value_error("copies must be an int64 array of shape (k, 2), got " + shape_str(copies));
        const int64_t n = copies.ndim() == 2 ? copies.shape(0) : 0;
        if (pools.empty() || n == 0) return;
        const havoc::PoolShape shape = pool_shape(pools[0], "pools[0]");
        std::vector<void*> ptrs;
        for (size_t i = 0; i < pools.size(); ++i) {
          const std::string what = "pools[" + std::to_string(i) + "]";
          if (!same_shape(shape, pool_shape(pools[i], what.c_str())))
            throw py::value_error(what + " has a different shape from pools[0]");
          require_same_dtype(pools[0], pools[i], "pools[0]", what.c_str());
          require_writeable(pools[i], what.c_str());
          ptrs.push_back(const_cast<void*>(pools[i].data()));
        }
        const size_t item = pools[0].itemsize();
        py::gil_scoped_release nogil;
        havoc::copy_blocks(ptrs, shape, item, copies.data(), n);
      },
      py::arg("pools"), py::arg("copies"),
      "For every pool and every (src, dst) row of copies: block dst = block src. Ids are checked first "
      "(IndexError, nothing copied); destinations must be distinct and never a source. Releases the GIL.");
  m.def(
      "paged_decode_attention",
      [](const py::array& q, const py::array& k_pool, const py::array& v_pool, const py::object& tables_obj,
         const py::object& lengths_obj, float scale, const std::string& dtype, int64_t num_splits,
         const std::string& isa, py::array out) {
        havoc::DecodeAttentionArgs a;
        a.shape = pool_shape(k_pool, "k_pool");
        if (!same_shape(a.shape, pool_shape(v_pool, "v_pool")))
          throw py::value_error("k_pool and v_pool have different shapes");
        a.dtype = kv_dtype(k_pool, dtype);
        require_same_dtype(k_pool, v_pool, "k_pool", "v_pool");
        require_same_dtype(k_pool, q, "k_pool", "q");
        require_same_dtype(k_pool, out, "k_pool", "out");
        if (q.ndim() != 3 || q.shape(2) != a.shape.head_dim)
          throw py::value_error("q must be (batch, n_heads, " + std::to_string(a.shape.head_dim) + "), got " +
                                shape_str(q));
        if (a.shape.head_dim > 1 && elem_stride(q, 2, "q") != 1)
          throw py::value_error("q must be contiguous along head_dim");
        a.n_seqs = q.shape(0);
        a.n_heads = q.shape(1);
        if (out.ndim() != 3 || out.shape(0) != a.n_seqs || out.shape(1) != a.n_heads ||
            out.shape(2) != a.shape.head_dim || !(out.flags() & py::array::c_style))
          throw py::value_error("out must be a C-contiguous array shaped like q " + shape_str(q) + ", got " +
                                shape_str(out));
        require_writeable(out, "out");
        auto tables = as_array<I32Array>(tables_obj, "block_tables");
        auto lengths = as_array<I32Array>(lengths_obj, "lengths");
        if (tables.ndim() != 2 || tables.shape(0) != a.n_seqs)
          throw py::value_error("block_tables must be (batch, width) int32, got " + shape_str(tables));
        if (lengths.ndim() != 1 || lengths.shape(0) != a.n_seqs)
          throw py::value_error("lengths must be (batch,) int32, got " + shape_str(lengths));
        a.q = q.data();
        a.q_seq_stride = elem_stride(q, 0, "q");
        a.q_head_stride = elem_stride(q, 1, "q");
        a.k_pool = k_pool.data();
        a.v_pool = v_pool.data();
        a.block_tables = tables.data();
        a.table_width = tables.shape(1);
        a.lengths = lengths.data();
        a.scale = scale;
        a.out = out.mutable_data();
        py::gil_scoped_release nogil;
        havoc::paged_decode_attention(a, num_splits, isa);
      },
      py::arg("q"), py::arg("k_pool"), py::arg("v_pool"), py::arg("block_tables"), py::arg("lengths"),
      py::kw_only(), py::arg("scale"), py::arg("dtype"), py::arg("num_splits") = 0, py::arg("isa") = "auto",
      py::arg("out"),
      "Decode attention of q (batch, n_heads, head_dim) over each sequence's first lengths[b] cached tokens, "
      "into out (shaped like q, C-contiguous), "
      "found through block_tables (batch, width) int32; GQA with n_heads / kv_heads query heads per KV head. "
      "dtype: 'float32', or 'bfloat16' with the buffers as int16 "
      "bits. num_splits: split-K chunks per sequence (0: automatic). isa: 'auto', 'scalar', 'avx2', "
      "'avx512'. Block ids and lengths are checked first (IndexError). Releases the GIL.");
  // --- elementwise ops (csrc/elementwise.cpp): rows of fp32 or bf16 (int16 bits) elements ----------------
  // A (rows, D) operand: its row stride in elements, its elements contiguous.
  const auto rows_of = [](const py::array& a, int64_t D, const char* what) {
    if (a.ndim() != 2 || a.shape(1) != D)
      throw py::value_error(std::string(what) + " must be (rows, " + std::to_string(D) + "), got " + shape_str(a));
    if (D > 1 && elem_stride(a, 1, what) != 1) throw py::value_error(std::string(what) + " must have contiguous rows");
    return a.shape(0) > 1 ? elem_stride(a, 0, what) : D;
  };
  const auto contiguous_out = [](py::array& a, const py::array& like, const char* what) {
    require_same_dtype(like, a, "x", what);
    require_writeable(a, what);
    if (!(a.flags() & py::array::c_style) || a.ndim() != like.ndim() ||
        !std::equal(a.shape(), a.shape() + a.ndim(), like.shape()))
      throw py::value_error(std::string(what) + " must be a C-contiguous array shaped " + shape_str(like) + ", got " +
                            shape_str(a));
  };
  const auto require_gain = [](const py::array& weight, int64_t D) {
    if (weight.ndim() != 1 || weight.shape(0) != D || (D > 1 && elem_stride(weight, 0, "weight") != 1))
      throw py::value_error("weight must be a contiguous (" + std::to_string(D) + ",), got " + shape_str(weight));
  };
  m.def(
      "rms_norm",
      [rows_of, contiguous_out, require_gain](const py::array& x, const py::array& weight, float eps,
                                              const std::string& dtype, const std::string& isa, py::array out) {
        const havoc::KVDType dt = kv_dtype(x, dtype);
        require_same_dtype(x, weight, "x", "weight");
        if (x.ndim() != 2) throw py::value_error("x must be (rows, dim), got " + shape_str(x));
        const int64_t M = x.shape(0), D = x.shape(1);
        const int64_t ldx = rows_of(x, D, "x");
        require_gain(weight, D);
        contiguous_out(out, x, "out");
        py::gil_scoped_release nogil;
        havoc::rms_norm(dt, x.data(), ldx, weight.data(), out.mutable_data(), D, M, D, eps, isa);
      },
      py::arg("x"), py::arg("weight"), py::arg("eps"), py::kw_only(), py::arg("dtype"), py::arg("isa") = "auto",
      py::arg("out"),
      "RMSNorm of the rows of x (rows, dim) times weight (dim,), into out (C-contiguous, shaped like x); every "
      "buffer in dtype ('float32', or 'bfloat16' as int16 bits). Releases the GIL.");
  m.def(
      "add_rms_norm",
      [rows_of, contiguous_out, require_gain](const py::array& x, const py::array& residual, const py::array& weight,
                                              float eps, const std::string& dtype, const std::string& isa,
                                              py::array out, py::array h) {
        const havoc::KVDType dt = kv_dtype(x, dtype);
        require_same_dtype(x, residual, "x", "residual");
        require_same_dtype(x, weight, "x", "weight");
        if (x.ndim() != 2) throw py::value_error("x must be (rows, dim), got " + shape_str(x));
        const int64_t M = x.shape(0), D = x.shape(1);
        const int64_t ldx = rows_of(x, D, "x"), ldr = rows_of(residual, D, "residual");
        if (residual.shape(0) != M) throw py::value_error("residual " + shape_str(residual) + " must be shaped like x " + shape_str(x));
        require_gain(weight, D);
        contiguous_out(out, x, "out");
        contiguous_out(h, x, "h");
        py::gil_scoped_release nogil;
        havoc::add_rms_norm(dt, x.data(), ldx, residual.data(), ldr, weight.data(), out.mutable_data(),
                            h.mutable_data(), M, D, eps, isa);
      },
      py::arg("x"), py::arg("residual"), py::arg("weight"), py::arg("eps"), py::kw_only(), py::arg("dtype"),
      py::arg("isa") = "auto", py::arg("out"), py::arg("h"),
      "h = x + residual (rows, dim), out = RMSNorm(h) * weight; out and h C-contiguous, shaped like x. "
      "Releases the GIL.");
  m.def(
      "apply_rope",
      [contiguous_out](const py::array& x, const py::array& cos, const py::array& sin, const std::string& dtype,
                       const std::string& isa, py::array out) {
        const havoc::KVDType dt = kv_dtype(x, dtype);
        if (x.ndim() != 4) throw py::value_error("x must be (batch, tokens, heads, head_dim), got " + shape_str(x));
        const int64_t B = x.shape(0), T = x.shape(1), heads = x.shape(2), hd = x.shape(3);
        if (hd > 1 && elem_stride(x, 3, "x") != 1) throw py::value_error("x must be contiguous along head_dim");
        for (const py::array* c : {&cos, &sin})
          if (c->ndim() != 3 || c->shape(1) != T || c->dtype().kind() != 'f' || c->itemsize() != 4 ||
              !(c->flags() & py::array::c_style) || c->shape(2) != cos.shape(2) || c->shape(0) != cos.shape(0))
            throw py::value_error("cos and sin must be C-contiguous float32 (batch or 1, " + std::to_string(T) +
                                  ", rotary_dim) alike, got " + shape_str(cos) + " and " + shape_str(sin));
        contiguous_out(out, x, "out");
        const int64_t sb = elem_stride(x, 0, "x"), st = elem_stride(x, 1, "x"), sh = elem_stride(x, 2, "x");
        const float* cp = static_cast<const float*>(cos.data());
        const float* sp = static_cast<const float*>(sin.data());
        const int64_t cb = cos.shape(0), rot = cos.shape(2);
        py::gil_scoped_release nogil;
        havoc::apply_rope(dt, x.data(), sb, st, sh, B, T, heads, hd, cp, sp, cb, rot, out.mutable_data(), isa);
      },
      py::arg("x"), py::arg("cos"), py::arg("sin"), py::kw_only(), py::arg("dtype"), py::arg("isa") = "auto",
      py::arg("out"),
      "Rotate-half RoPE of x (batch, tokens, heads, head_dim; any strides, head_dim contiguous) over its first "
      "rotary_dim features by cos, sin (fp32 (batch or 1, tokens, rotary_dim)), into out (C-contiguous, shaped "
      "like x). Releases the GIL.");
  m.def(
      "swiglu",
      [rows_of, contiguous_out](const py::array& gate, const py::array& up, const std::string& dtype,
                                const std::string& isa, py::array out) {
        const havoc::KVDType dt = kv_dtype(gate, dtype);
        require_same_dtype(gate, up, "gate", "up");
        if (gate.ndim() != 2 || up.ndim() != 2 || gate.shape(0) != up.shape(0))
          throw py::value_error("gate and up must be (rows, hidden) alike, got " + shape_str(gate) + " and " + shape_str(up));
        const int64_t M = gate.shape(0), Fh = gate.shape(1);
        const int64_t ldg = rows_of(gate, Fh, "gate"), ldu = rows_of(up, Fh, "up");
        contiguous_out(out, gate, "out");
        py::gil_scoped_release nogil;
        havoc::swiglu(dt, gate.data(), ldg, up.data(), ldu, out.mutable_data(), M, Fh, isa);
      },
      py::arg("gate"), py::arg("up"), py::kw_only(), py::arg("dtype"), py::arg("isa") = "auto", py::arg("out"),
      "silu(gate) * up over rows (rows, hidden; row strides free, elements contiguous) into out (C-contiguous). "
      "Releases the GIL.");
  m.def(
      "attention",
      [](const py::array& q, const py::array& k, const py::array& v, bool causal, int64_t q_offset,
         const py::object& key_mask_obj, float scale, const std::string& dtype, const std::string& isa,
         py::array out) {
        havoc::AttentionArgs a;
        a.dtype = attention_operands(q, k, v, out, dtype, 4, "(batch, heads, tokens, head_dim)");
        a.batch = q.shape(0), a.n_heads = q.shape(1), a.q_len = q.shape(2), a.head_dim = q.shape(3);
        a.kv_heads = k.shape(1), a.kv_len = k.shape(2);
        if (k.shape(0) != a.batch || k.shape(3) != a.head_dim)
          throw py::value_error("k " + shape_str(k) + " does not match q " + shape_str(q) +
                                " in batch or head_dim");
        const auto view = [](const py::array& t, const char* what) {
          return havoc::HeadsView{t.data(), elem_stride(t, 0, what), elem_stride(t, 1, what), elem_stride(t, 2, what)};
        };
        a.q = view(q, "q"), a.k = view(k, "k"), a.v = view(v, "v");
        a.out = view(out, "out");
        a.out.data = out.mutable_data();
        a.causal = causal;
        a.q_offset = q_offset;
        a.scale = scale;
        std::optional<py::array_t<uint8_t, py::array::c_style | py::array::forcecast>> mask;
        if (!key_mask_obj.is_none()) {
          mask = as_array<py::array_t<uint8_t, py::array::c_style | py::array::forcecast>>(key_mask_obj, "key_mask");
          if (mask->ndim() != 2 || mask->shape(0) != a.batch || mask->shape(1) != a.kv_len)
            throw py::value_error("key_mask must be (batch, kv_len) = (" + std::to_string(a.batch) + ", " +
                                  std::to_string(a.kv_len) + "), got " + shape_str(*mask));
          a.key_mask = mask->data();
          a.key_mask_stride = a.kv_len;
        }
        py::gil_scoped_release nogil;
        havoc::attention(a, isa);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::kw_only(), py::arg("causal"), py::arg("q_offset"),
      py::arg("key_mask"), py::arg("scale"), py::arg("dtype"), py::arg("isa") = "auto", py::arg("out"),
      "Attention of q (batch, n_heads, q_len, head_dim) over k, v (batch, kv_heads, kv_len, head_dim) into out "
      "(shaped like q; any strides with head_dim contiguous, as q, k and v): GQA with n_heads / kv_heads query "
      "heads per KV head; causal: query t sees keys j <= q_offset + t; key_mask: None or (batch, kv_len), 0 at "
      "keys to ignore; a query that sees no key gets zeros. dtype: 'float32', or 'bfloat16' with the buffers "
      "as int16 bits. isa: 'auto' or one of attention_isas(). Releases the GIL.");
  m.def(
      "attention_varlen",
      [](const py::array& q, const py::array& k, const py::array& v, const py::object& cu_q_obj,
         const py::object& cu_k_obj, int64_t /*max_seqlen_q*/, int64_t /*max_seqlen_k*/, bool causal, float scale,
         const std::string& dtype, const std::string& isa, py::array out) {
        const havoc::KVDType kv = attention_operands(q, k, v, out, dtype, 3, "(tokens, heads, head_dim)");
        if (k.shape(2) != q.shape(2)) throw py::value_error("k " + shape_str(k) + " and q " + shape_str(q) +
                                                            " differ in head_dim");
        auto cu_q = as_array<IdArray>(cu_q_obj, "cu_seqlens_q");
        auto cu_k = as_array<IdArray>(cu_k_obj, "cu_seqlens_k");
        if (cu_q.ndim() != 1 || cu_k.ndim() != 1 || cu_q.shape(0) != cu_k.shape(0) || cu_q.shape(0) < 1)
          throw py::value_error("cu_seqlens_q and cu_seqlens_k must be (batch + 1,) each, got " + shape_str(cu_q) +
                                " and " + shape_str(cu_k));
        const int64_t n = cu_q.shape(0) - 1;
        const int64_t* bq = cu_q.data();
        const int64_t* bk = cu_k.data();
        for (int64_t b = 0; b <= n; ++b) {
          if (bq[b] < 0 || bq[b] > q.shape(0) || bk[b] < 0 || bk[b] > k.shape(0) ||
              (b > 0 && (bq[b] < bq[b - 1] || bk[b] < bk[b - 1])))
            throw py::value_error("cu_seqlens must rise within the tokens: entry " +
                                  std::to_string(b) + " is (" + std::to_string(bq[b]) + ", " + std::to_string(bk[b]) +
                                  ") for " + std::to_string(q.shape(0)) + " queries and " +
                                  std::to_string(k.shape(0)) + " keys");
        }
        const int64_t qs0 = elem_stride(q, 0, "q"), qs1 = elem_stride(q, 1, "q");
        const int64_t ks0 = elem_stride(k, 0, "k"), ks1 = elem_stride(k, 1, "k");
        const int64_t vs0 = elem_stride(v, 0, "v"), vs1 = elem_stride(v, 1, "v");
        const int64_t os0 = elem_stride(out, 0, "out"), os1 = elem_stride(out, 1, "out");
        const size_t item = q.itemsize();
        const char* qd = static_cast<const char*>(q.data());
        const char* kd = static_cast<const char*>(k.data());
        const char* vd = static_cast<const char*>(v.data());
        char* od = static_cast<char*>(out.mutable_data());
        havoc::AttentionArgs a;
        a.dtype = kv;
        a.batch = 1, a.n_heads = q.shape(1), a.kv_heads = k.shape(1), a.head_dim = q.shape(2);
        a.causal = causal;
        a.scale = scale;
        py::gil_scoped_release nogil;
        for (int64_t b = 0; b < n; ++b) {  // bottom-right causal alignment: a sequence's queries are its last keys
          a.q_len = bq[b + 1] - bq[b], a.kv_len = bk[b + 1] - bk[b], a.q_offset = a.kv_len - a.q_len;
          a.q = {qd + bq[b] * qs0 * item, 0, qs1, qs0};
          a.k = {kd + bk[b] * ks0 * item, 0, ks1, ks0};
          a.v = {vd + bk[b] * vs0 * item, 0, vs1, vs0};
          a.out = {od + bq[b] * os0 * item, 0, os1, os0};
          havoc::attention(a, isa);
        }
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("cu_seqlens_q"), py::arg("cu_seqlens_k"),
      py::arg("max_seqlen_q"), py::arg("max_seqlen_k"), py::kw_only(), py::arg("causal"), py::arg("scale"),
      py::arg("dtype"), py::arg("isa") = "auto", py::arg("out"),
      "attention over a packed batch: sequence b's queries q[cu_seqlens_q[b]:cu_seqlens_q[b+1]] (tokens, "
      "n_heads, head_dim) over its keys k, v[cu_seqlens_k[b]:cu_seqlens_k[b+1]] (tokens, kv_heads, head_dim), "
      "causal bottom-right aligned, into out (shaped like q). max_seqlen_q/k are the op's (they size the Triton "
      "grid) and not needed here. int64 cu_seqlens are checked first (ValueError). "
      "Releases the GIL.");
  m.def("attention_isas", &havoc::attention_isas,
        "Kernel variants of attention / attention_varlen this CPU can run, narrowest first ('avx512_bf16': "
        "vdpbf16ps for bf16).");
  m.def("decode_attention_isas", &havoc::decode_attention_isas,
        "Kernel variants of paged_decode_attention this CPU can run, narrowest first.");
  m.def("decode_attention_splits", &havoc::decode_attention_splits, py::arg("n_seqs"), py::arg("max_length"),
        py::arg("block_size"),
        "The split-K count paged_decode_attention chooses for a batch shape on this machine.");

  using havoc::BlockManager;
  auto block_manager = py::class_<BlockManager>(m, "BlockManager", R"doc(
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
            using Holder = havoc::BlockTable;
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
  install_fast_methods(block_manager);
}
