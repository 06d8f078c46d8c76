// pybind11 glue for fastntk._core: checks buffers, releases the GIL, calls one
// kernel from cpp/include/fastntk. Python validates user input and allocates
// every output; this file only guards the invariants the kernels rely on.
#include <pybind11/complex.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <complex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#include "fastntk/cholesky.hpp"
#include "fastntk/conv.hpp"
#include "fastntk/fc.hpp"
#include "fastntk/math.hpp"
#include "fastntk/sketch.hpp"

namespace py = pybind11;
using fastntk::idx;

namespace {

// Fork safety (DESIGN §3). GNU libgomp keeps a thread pool per master thread, and a
// fork()ed child inherits the forking thread's pool without its threads: the child's
// first parallel region waits for them forever. Before fork() the forking thread's pool
// is released (omp_pause_resource_all, OpenMP 5.0), so the child starts a pool of its
// own and runs at full width; the parent's next region starts a new pool (once per fork).
// Where that is not possible (an older runtime, fork() inside a parallel region) a child
// of a process that has run a kernel runs every kernel on one thread, in the same order,
// so with the same results. (Numba's kernels are handled in fastntk/_backend.)
// omp_pause_resource_all is OpenMP 5.0; GCC's libgomp has it from GCC 9 while _OPENMP
// still says 4.5.
#if defined(_OPENMP) && (_OPENMP >= 201811 || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 9))
#define FASTNTK_OMP_PAUSE 1
#endif
std::atomic<bool> g_kernel_ran{false};    // this process has entered an OpenMP kernel
std::atomic<bool> g_pool_released{true};  // the forking thread held no pool at the last fork()
std::atomic<bool> g_serial{false};        // a child whose pool may be broken: one thread

void before_fork() noexcept {
#ifdef FASTNTK_OMP_PAUSE
    // A serial child's pool is the broken one it inherited: releasing it would wait for
    // threads that do not exist, so its children stay serial too.
    g_pool_released = !g_serial && omp_pause_resource_all(omp_pause_soft) == 0;
#else
    g_pool_released = !g_serial && !g_kernel_ran;
#endif
}

void in_child() noexcept {
    if (!g_pool_released) g_serial = true;
}

// Called by the glue before each kernel, in the thread that will run it (the ICV
// omp_set_num_threads sets is per thread).
void enter_kernel() noexcept {
    g_kernel_ran.store(true, std::memory_order_relaxed);
#ifdef _OPENMP
    if (g_serial.load(std::memory_order_relaxed)) omp_set_num_threads(1);
#endif
}

// No forcecast: Python has already cast, so a dtype mismatch is a bug, not a copy.
// Strided views are allowed (row blocks of a larger result); rows must be unit-stride.
template <class T>
using Array = py::array_t<T, 0>;

std::string dims(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

// Row stride in elements of a 2-D array whose rows are contiguous.
template <class T>
idx row_stride(const py::array& a, const char* name, idx rows, idx cols) {
    if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != cols)
        throw std::invalid_argument(std::string(name) + " must have shape (" + std::to_string(rows) + ", " +
                                    std::to_string(cols) + "); got " + dims(a));
    if (rows == 0 || cols == 0) return cols;
    if (cols > 1 && a.strides(1) != static_cast<py::ssize_t>(sizeof(T)))
        throw std::invalid_argument(std::string(name) + " must have contiguous rows");
    if (a.strides(0) % static_cast<py::ssize_t>(sizeof(T)) != 0 || (rows > 1 && a.strides(0) < cols * (idx)sizeof(T)))
        throw std::invalid_argument(std::string(name) + " has a row stride that is not a whole number of rows");
    return rows > 1 ? a.strides(0) / static_cast<idx>(sizeof(T)) : cols;
}

// The degree of a Monomial, RectifiedMonomial or Hermite op: a non-negative integer (at most
// kMaxRectifiedDegree for RectifiedMonomial, whose coefficient tables live on the stack).
void check_degree(const fastntk::Op& op, idx l) {
    using fastntk::OpKind;
    if (op.kind != OpKind::Monomial && op.kind != OpKind::RectifiedMonomial && op.kind != OpKind::Hermite) return;
    const double n = op.p[0];
    const double top = op.kind == OpKind::RectifiedMonomial ? fastntk::kMaxRectifiedDegree : 1e6;
    if (!(n >= 0 && n <= top && n == static_cast<int>(n)))
        throw std::invalid_argument("ops[" + std::to_string(l) + ", 1] is not a degree in [0, " + std::to_string(static_cast<long>(top)) + "]");
}

// ops: float64 array (n_ops, 5) of [kind, p0, p1, p2, p3] rows.
std::vector<fastntk::Op> read_ops(const Array<double>& ops, idx* n_act) {
    if (ops.ndim() != 2 || ops.shape(1) != 5)
        throw std::invalid_argument("ops must have shape (n_ops, 5); got " + dims(ops));
    auto o = ops.unchecked<2>();
    std::vector<fastntk::Op> out(o.shape(0));
    *n_act = 0;
    for (idx l = 0; l < o.shape(0); ++l) {
        const int kind = static_cast<int>(o(l, 0));
        if (kind < 0 || kind > static_cast<int>(fastntk::kLastOpKind) || kind != o(l, 0))
            throw std::invalid_argument("ops[" + std::to_string(l) + ", 0] is not an op kind");
        out[l].kind = static_cast<fastntk::OpKind>(kind);
        for (int q = 0; q < 4; ++q) out[l].p[q] = o(l, q + 1);
        check_degree(out[l], l);
        *n_act += fastntk::is_activation(out[l].kind);
    }
    return out;
}

// An optional output: None, or an array of exactly dtype T and shape (n1, n2) with
// contiguous rows. Never converted: a converted copy would receive the result.
template <class T>
T* optional_out(const py::object& obj, const char* name, idx n1, idx n2, idx* ld) {
    *ld = n2;
    if (obj.is_none()) return nullptr;
    if (!py::isinstance<Array<T>>(obj))
        throw std::invalid_argument(std::string(name) + " must be None or an array of the dtype of sigma");
    auto a = py::reinterpret_borrow<Array<T>>(obj);
    *ld = row_stride<T>(a, name, n1, n2);
    return a.mutable_data();
}

// The columns' sqrt(var2) and 1/sqrt(var2) per activation, once per tile (O(n_act n2)).
std::vector<double> column_scales(const Array<double>& var2, idx n_act, idx n2, idx ld) {
    std::vector<double> scales2(static_cast<std::size_t>(2 * n_act * n2));
    for (idx a = 0; a < n_act; ++a)
        fastntk::column_scales(var2.data() + a * ld, n2, scales2.data() + 2 * a * n2, scales2.data() + (2 * a + 1) * n2);
    return scales2;
}

// Entrywise: the tile by fastntk::fc_tile_entries (one entry at a time: the GPU kernels' code), else fc_tile.
template <class T, bool Entrywise = false>
void fc_tile(const Array<T>& sigma, py::object nngp, py::object ntk, const Array<double>& var1,
             const Array<double>& var2, const Array<double>& ops, double rho_tol) {
    idx n_act;
    const auto op = read_ops(ops, &n_act);
    const idx n1 = sigma.ndim() == 2 ? sigma.shape(0) : -1, n2 = sigma.ndim() == 2 ? sigma.shape(1) : -1;
    fastntk::Strides ld;
    ld.sigma = row_stride<T>(sigma, "sigma", n1, n2);
    T* nngp_ptr = optional_out<T>(nngp, "nngp", n1, n2, &ld.nngp);
    T* ntk_ptr = optional_out<T>(ntk, "ntk", n1, n2, &ld.ntk);
    if (ntk_ptr && ntk_ptr == sigma.data() && (op.empty() || op[0].kind != fastntk::OpKind::Input))
        throw std::invalid_argument("sigma may share its buffer with ntk only when ops start with the input op");
    ld.var1 = row_stride<double>(var1, "var1", n_act, n1);
    ld.var2 = row_stride<double>(var2, "var2", n_act, n2);
    const T* sigma_ptr = sigma.data();
    const auto scales2 = Entrywise ? std::vector<double>() : column_scales(var2, n_act, n2, ld.var2);
    enter_kernel();
    py::gil_scoped_release release;
    if constexpr (Entrywise)
        fastntk::fc_tile_entries<T>(sigma_ptr, nngp_ptr, ntk_ptr, n1, n2, ld, var1.data(), var2.data(), op.data(),
                                    static_cast<int>(op.size()), rho_tol);
    else
        fastntk::fc_tile<T>(sigma_ptr, nngp_ptr, ntk_ptr, n1, n2, ld, var1.data(), var2.data(), scales2.data(),
                            op.data(), static_cast<int>(op.size()), rho_tol);
}

// The function pointer held by a PyCapsule (scipy.linalg.cython_blas.__pyx_capi__['dgemm']).
template <class F>
F blas_from(const py::capsule& cap) {
    void* f = PyCapsule_GetPointer(cap.ptr(), PyCapsule_GetName(cap.ptr()));
    if (!f) throw py::error_already_set();
    return reinterpret_cast<F>(f);
}

// fc_tile of the Gram x1 . x2 (computed here, sub-tile by sub-tile, by the BLAS gemm in the capsule,
// which must run single-threaded: the caller limits BLAS to one thread) into nngp, or ntk when nngp
// is None (then ops start with the input op). x1 (n1, d), x2 (n2, d) with contiguous rows.
// self_gram: None, or x1[i] . x1[i] (n1,) float64 written over the Gram's entries (i, i) (a
// symmetric result's tile, x2 = x1 from its first row on: coincident points then see exactly the
// variances of the per-point pass); with it only the sub-tiles on and above the diagonal are computed.
template <class T>
void fc_gram_tile(const Array<T>& x1, const Array<T>& x2, py::object nngp, py::object ntk, const Array<double>& var1,
                  const Array<double>& var2, const Array<double>& ops, double rho_tol, const py::capsule& gemm,
                  py::object self_gram) {
    idx n_act;
    const auto op = read_ops(ops, &n_act);
    if (op.empty() || op[0].kind != fastntk::OpKind::Input)
        throw std::invalid_argument("fc_gram_tile needs ops that start with the input op");
    const idx n1 = x1.ndim() == 2 ? x1.shape(0) : -1, d = x1.ndim() == 2 ? x1.shape(1) : -1;
    const idx n2 = x2.ndim() == 2 ? x2.shape(0) : -1;
    const idx ld1 = row_stride<T>(x1, "x1", n1, d), ld2 = row_stride<T>(x2, "x2", n2, d);
    fastntk::Strides ld;
    T* nngp_ptr = optional_out<T>(nngp, "nngp", n1, n2, &ld.nngp);
    T* ntk_ptr = optional_out<T>(ntk, "ntk", n1, n2, &ld.ntk);
    T* sigma = nngp_ptr ? nngp_ptr : ntk_ptr;
    if (!sigma) throw std::invalid_argument("fc_gram_tile needs nngp or ntk");
    ld.sigma = nngp_ptr ? ld.nngp : ld.ntk;
    ld.var1 = row_stride<double>(var1, "var1", n_act, n1);
    ld.var2 = row_stride<double>(var2, "var2", n_act, n2);
    const double* diag = nullptr;
    if (!self_gram.is_none()) {
        auto g = py::cast<py::array_t<double, py::array::c_style>>(self_gram);
        if (g.ndim() != 1 || g.shape(0) != n1 || n1 > n2)
            throw std::invalid_argument("self_gram must have shape (n1,), n1 <= n2 (x2 = x1 from its first row on)");
        diag = g.data();
    }
    const int k = static_cast<int>(d), lda = static_cast<int>(ld2), ldb = static_cast<int>(ld1);
    if (d > INT_MAX || ld1 > INT_MAX || ld2 > INT_MAX || ld.sigma > INT_MAX)
        throw std::invalid_argument("fc_gram_tile: a dimension exceeds the BLAS integer range");
    const fastntk::Gemm<T> f = blas_from<fastntk::Gemm<T>>(gemm);
    const T* a = x2.data();
    const T* b = x1.data();
    // Row-major out[r0:r1, c0:c1] = x1[r0:r1] . x2[c0:c1]^T is column-major out^T = x2[c0:c1] . x1[r0:r1]^T.
    auto gram = [=](idx r0, idx r1, idx c0, idx c1, T* out, idx ld_out) {
        const int m = static_cast<int>(c1 - c0), n = static_cast<int>(r1 - r0), ldc = static_cast<int>(ld_out);
        const T one = 1, zero = 0;
        if (k == 0) {
            for (idx r = r0; r < r1; ++r) std::fill(out + (r - r0) * ld_out, out + (r - r0) * ld_out + m, zero);
        } else {
            f("T", "N", &m, &n, &k, &one, a + c0 * ld2, &lda, b + r0 * ld1, &ldb, &zero, out, &ldc);
        }
        if (diag)
            for (idx r = std::max(r0, c0); r < std::min(r1, c1); ++r)
                out[(r - r0) * ld_out + (r - c0)] = static_cast<T>(diag[r]);
    };
    const auto scales2 = column_scales(var2, n_act, n2, ld.var2);
    enter_kernel();
    py::gil_scoped_release release;
    fastntk::fc_gram_tile<T>(gram, sigma, nngp_ptr, ntk_ptr, n1, n2, ld, var1.data(), var2.data(), scales2.data(),
                             op.data(), static_cast<int>(op.size()), rho_tol, diag != nullptr);
}

void fc_diagonal(Array<double> nngp, py::object ntk_obj, Array<double> var, const Array<double>& ops) {
    idx n_act;
    const auto op = read_ops(ops, &n_act);
    if (nngp.ndim() != 1 || nngp.strides(0) != sizeof(double))
        throw std::invalid_argument("nngp must be a contiguous 1-D array; got shape " + dims(nngp));
    const idx n = nngp.shape(0);
    double* t = nullptr;
    if (!ntk_obj.is_none()) {
        if (!py::isinstance<Array<double>>(ntk_obj))
            throw std::invalid_argument("ntk must be None or a float64 array");
        auto ntk = py::reinterpret_borrow<Array<double>>(ntk_obj);
        if (ntk.ndim() != 1 || ntk.shape(0) != n || ntk.strides(0) != sizeof(double))
            throw std::invalid_argument("ntk must be a contiguous array of shape (" + std::to_string(n) + ",)");
        t = ntk.mutable_data();
    }
    const idx ld = row_stride<double>(var, "var", n_act, n);
    double* k = nngp.mutable_data();
    double* v = var.mutable_data();
    enter_kernel();
    py::gil_scoped_release release;
    fastntk::fc_diagonal(k, t, n, op.data(), static_cast<int>(op.size()), v, ld);
}

template <class T>
void mirror_upper(Array<T> a) {
    const idx n = a.ndim() == 2 ? a.shape(0) : -1;
    const idx ld = row_stride<T>(a, "a", n, n);
    T* p = a.mutable_data();
    enter_kernel();
    py::gil_scoped_release release;
    fastntk::mirror_upper<T>(p, n, ld);
}

// out[i] = F(a[i], b[i]): the elementwise functions of math.hpp, for tests.
template <double (*F)(double, double)>
void binary_array(const py::array_t<double, py::array::c_style>& a, const py::array_t<double, py::array::c_style>& b,
                  py::array_t<double, py::array::c_style> out) {
    if (a.size() != b.size() || out.size() != b.size())
        throw std::invalid_argument("the two arguments and out must have the same size");
    const double* ap = a.data();
    const double* bp = b.data();
    double* op = out.mutable_data();
    const idx n = b.size();
    py::gil_scoped_release release;
    for (idx i = 0; i < n; ++i) op[i] = F(ap[i], bp[i]);
}

void set_num_threads(int n) {
    if (n < 1) throw std::invalid_argument("n must be >= 1; got " + std::to_string(n));
#ifdef _OPENMP
    omp_set_num_threads(g_serial ? 1 : n);  // a serial child stays serial (see before_fork)
#endif
}

int get_num_threads() {
#ifdef _OPENMP
    return g_serial ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

// --- Random features and sketches (cpp/include/fastntk/sketch.hpp) ---

bool is_power_of_2(idx n) { return n > 0 && (n & (n - 1)) == 0; }

template <class T>
bool has_dtype(const py::array& a) {
    return py::isinstance<Array<T>>(a);
}

std::string dtype_name(const py::array& a) { return py::str(a.dtype()); }

// The number of rows of a 2-D array.
idx rows_of(const py::array& a, const char* name) {
    if (a.ndim() != 2) throw std::invalid_argument(std::string(name) + " must be 2-D; got shape " + dims(a));
    return a.shape(0);
}

// The length of a 1-D array of unit stride (any stride with at most one element).
template <class T>
idx vector_length(const py::array& a, const char* name) {
    if (a.ndim() != 1) throw std::invalid_argument(std::string(name) + " must be 1-D; got shape " + dims(a));
    if (a.shape(0) > 1 && a.strides(0) != static_cast<py::ssize_t>(sizeof(T)))
        throw std::invalid_argument(std::string(name) + " must be contiguous");
    return a.shape(0);
}

void check_writeable(const py::array& a, const char* name) {
    if (!a.writeable()) throw std::invalid_argument(std::string(name) + " must be writeable");
}

// True when the byte spans [first element, last element] of a and b intersect.
bool overlaps(const py::array& a, const py::array& b) {
    if (a.size() == 0 || b.size() == 0) return false;
    auto span = [](const py::array& v) {
        auto lo = reinterpret_cast<std::uintptr_t>(v.data()), hi = lo + v.itemsize();
        for (py::ssize_t k = 0; k < v.ndim(); ++k) {
            const py::ssize_t step = (v.shape(k) - 1) * v.strides(k);
            (step < 0 ? lo : hi) += step;
        }
        return std::pair<std::uintptr_t, std::uintptr_t>(lo, hi);
    };
    const auto [a0, a1] = span(a);
    const auto [b0, b1] = span(b);
    return a0 < b1 && b0 < a1;
}

// 0 <= index[j] < bound for every j.
void check_indices(const Array<std::int64_t>& index, const char* name, idx bound, const char* bound_name) {
    const std::int64_t* v = index.data();
    for (idx j = 0; j < index.shape(0); ++j)
        if (v[j] < 0 || v[j] >= bound)
            throw std::invalid_argument(std::string(name) + "[" + std::to_string(j) + "] = " + std::to_string(v[j]) +
                                        " is not in [0, " + bound_name + ") = [0, " + std::to_string(bound) + ")");
}

// a (n_rows, n) <- a H_n in place, n a power of 2 (H_n unnormalised, Sylvester's order).
template <class T>
void fwht(Array<T> a) {
    const idx n_rows = rows_of(a, "a"), n = a.shape(1);
    if (!is_power_of_2(n))
        throw std::invalid_argument("a must have a power-of-2 number of columns (n >= 1); got shape " + dims(a));
    const idx ld = row_stride<T>(a, "a", n_rows, n);
    check_writeable(a, "a");
    T* p = a.mutable_data();
    enter_kernel();
    py::gil_scoped_release release;
    fastntk::fwht_rows<T>(p, n_rows, n, ld);
}

// Reached when no overload of fwht matched: a is an array of another dtype.
void fwht_dtype(const py::array& a) {
    throw std::invalid_argument("a must be float32 or float64 (native byte order); got " + dtype_name(a));
}

// out (N, m) <- TensorSRHT of the rows of x (N, p) and y (N, q) with signs signs_x (P,), signs_y (Q,)
// and indices index_x, index_y (m,) (see cpp/include/fastntk/sketch.hpp).
template <class T>
void tensor_srht(const Array<T>& x, const Array<T>& y, const Array<T>& signs_x, const Array<T>& signs_y,
                 const Array<std::int64_t>& index_x, const Array<std::int64_t>& index_y, Array<T> out) {
    const idx n = rows_of(x, "x"), p = x.shape(1);
    const idx ldx = row_stride<T>(x, "x", n, p);
    if (rows_of(y, "y") != n)
        throw std::invalid_argument("y must have as many rows as x (" + std::to_string(n) + "); got shape " + dims(y));
    const idx q = y.shape(1);
    const idx ldy = row_stride<T>(y, "y", n, q);
    const idx P = vector_length<T>(signs_x, "signs_x"), Q = vector_length<T>(signs_y, "signs_y");
    if (!is_power_of_2(P) || P < p)
        throw std::invalid_argument("signs_x must have a power-of-2 length P >= p = " + std::to_string(p) +
                                    " (the columns of x); got shape " + dims(signs_x));
    if (!is_power_of_2(Q) || Q < q)
        throw std::invalid_argument("signs_y must have a power-of-2 length Q >= q = " + std::to_string(q) +
                                    " (the columns of y); got shape " + dims(signs_y));
    const idx m = vector_length<std::int64_t>(index_x, "index_x");
    if (vector_length<std::int64_t>(index_y, "index_y") != m)
        throw std::invalid_argument("index_y must have the shape of index_x (" + std::to_string(m) + ",); got " +
                                    dims(index_y));
    check_indices(index_x, "index_x", P, "P");
    check_indices(index_y, "index_y", Q, "Q");
    const idx ldo = row_stride<T>(out, "out", n, m);
    check_writeable(out, "out");
    for (const auto& [a, name] : {std::pair<const py::array&, const char*>{x, "x"}, {y, "y"}, {signs_x, "signs_x"},
                                  {signs_y, "signs_y"}, {index_x, "index_x"}, {index_y, "index_y"}})
        if (overlaps(out, a)) throw std::invalid_argument(std::string("out must not share memory with ") + name);
    const idx n_chunks = std::min<idx>(n, get_num_threads());
    std::vector<T> scratch(static_cast<std::size_t>(n_chunks * (P + Q)));
    T* o = out.mutable_data();
    enter_kernel();
    py::gil_scoped_release release;
    fastntk::tensor_srht_rows<T>(x.data(), ldx, p, y.data(), ldy, q, n, signs_x.data(), P, signs_y.data(), Q,
                                 index_x.data(), index_y.data(), m, o, ldo, scratch.data(), n_chunks);
}

// Reached when no overload of tensor_srht matched: names the first argument of the wrong dtype.
void tensor_srht_dtype(const py::array& x, const py::array& y, const py::array& signs_x, const py::array& signs_y,
                       const py::array& index_x, const py::array& index_y, const py::array& out) {
    const bool f64 = has_dtype<double>(x);
    if (!f64 && !has_dtype<float>(x))
        throw std::invalid_argument("x must be float32 or float64 (native byte order); got " + dtype_name(x));
    for (const auto& [a, name] : {std::pair<const py::array&, const char*>{y, "y"}, {signs_x, "signs_x"},
                                  {signs_y, "signs_y"}, {out, "out"}})
        if (f64 ? !has_dtype<double>(a) : !has_dtype<float>(a))
            throw std::invalid_argument(std::string(name) + " must have the dtype of x (" + dtype_name(x) + "); got " +
                                        dtype_name(a));
    for (const auto& [a, name] : {std::pair<const py::array&, const char*>{index_x, "index_x"}, {index_y, "index_y"}})
        if (!has_dtype<std::int64_t>(a))
            throw std::invalid_argument(std::string(name) + " must be int64 (native byte order); got " + dtype_name(a));
    throw std::logic_error("tensor_srht: arrays of matching dtypes reached the dtype diagnosis");
}

// out <- the Fourier TensorSRHT's products of the half spectra ha (n, pa) and hb (n, pb) (complex,
// of T's precision), pairs j with indices ia, ib and imaginary-part signs sa, sb (n_pairs,), and
// n_real (0 or 1) zero-frequency products (cpp/include/fastntk/sketch.hpp, fourier_products).
template <class T>
void fourier_products(const Array<std::complex<T>>& ha, const Array<std::complex<T>>& hb,
                      const Array<std::int64_t>& ia, const Array<std::int64_t>& ib, const Array<T>& sa,
                      const Array<T>& sb, int n_real, T scale, T real_scale, Array<T> out) {
    const idx n = rows_of(ha, "ha"), pa = ha.shape(1), pb = hb.shape(1);
    const idx lda = row_stride<std::complex<T>>(ha, "ha", n, pa), ldb = row_stride<std::complex<T>>(hb, "hb", n, pb);
    const idx n_pairs = vector_length<std::int64_t>(ia, "ia");
    for (const auto& [a, name] : {std::pair<const py::array&, const char*>{ib, "ib"}, {sa, "sa"}, {sb, "sb"}})
        if (a.ndim() != 1 || a.shape(0) != n_pairs || (n_pairs > 1 && a.strides(0) != a.itemsize()))
            throw std::invalid_argument(std::string(name) + " must be contiguous of shape (" + std::to_string(n_pairs) +
                                        ",); got " + dims(a));
    if (n_real != 0 && n_real != 1) throw std::invalid_argument("n_real must be 0 or 1");
    if ((n_real && (pa == 0 || pb == 0)) || (n_pairs && (pa == 0 || pb == 0)))
        throw std::invalid_argument("ha and hb need at least one frequency");
    check_indices(ia, "ia", pa, "the columns of ha");
    check_indices(ib, "ib", pb, "the columns of hb");
    const idx ldo = row_stride<T>(out, "out", n, 2 * n_pairs + n_real);
    check_writeable(out, "out");
    for (const auto& [a, name] : {std::pair<const py::array&, const char*>{ha, "ha"}, {hb, "hb"}})
        if (overlaps(out, a)) throw std::invalid_argument(std::string("out must not share memory with ") + name);
    T* o = out.mutable_data();
    enter_kernel();
    py::gil_scoped_release release;
    fastntk::fourier_products<T>(reinterpret_cast<const T*>(ha.data()), lda, reinterpret_cast<const T*>(hb.data()),
                                 ldb, n, ia.data(), ib.data(), sa.data(), sb.data(), n_pairs, n_real, scale, real_scale,
                                 o, ldo);
}

// A contiguous float64 array of exactly the given shape (name in the message).
const double* contiguous(const Array<double>& a, const char* name, std::vector<idx> shape) {
    bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
    for (std::size_t k = 0; ok && k < shape.size(); ++k) ok = a.shape(k) == shape[k];
    if (!ok) {
        std::string want = "(";
        for (std::size_t k = 0; k < shape.size(); ++k) want += (k ? ", " : "") + std::to_string(shape[k]);
        if (shape.size() == 1) want += ",";
        throw std::invalid_argument(std::string(name) + " must have shape " + want + ")" + "; got " + dims(a));
    }
    if (!(a.flags() & py::array::c_style))
        throw std::invalid_argument(std::string(name) + " must be C-contiguous");
    return a.data();
}

// B tiles (sigma (B, n1, n2), in place; ntk (B, n1, n2) or None) through ops; var1 (B, n_act, n1), var2 (B, n_act, n2).
void fc_tiles(Array<double> sigma, py::object ntk_obj, const Array<double>& var1, const Array<double>& var2,
              const Array<double>& ops, double rho_tol) {
    idx n_act;
    const auto op = read_ops(ops, &n_act);
    if (sigma.ndim() != 3) throw std::invalid_argument("sigma must be 3-D (B, n1, n2); got " + dims(sigma));
    const idx B = sigma.shape(0), n1 = sigma.shape(1), n2 = sigma.shape(2);
    contiguous(sigma, "sigma", {B, n1, n2});
    double* t = nullptr;
    if (!ntk_obj.is_none()) {
        if (!py::isinstance<Array<double>>(ntk_obj)) throw std::invalid_argument("ntk must be None or a float64 array");
        auto ntk = py::reinterpret_borrow<Array<double>>(ntk_obj);
        contiguous(ntk, "ntk", {B, n1, n2});
        if (overlaps(ntk, sigma)) throw std::invalid_argument("ntk must not share memory with sigma");
        t = ntk.mutable_data();
    }
    const double* v1 = contiguous(var1, "var1", {B, n_act, n1});
    const double* v2 = contiguous(var2, "var2", {B, n_act, n2});
    const auto scales2 = column_scales(var2, B * n_act, n2, n2);  // (var2 is contiguous: its rows b n_act + a)
    double* k = sigma.mutable_data();
    enter_kernel();
    py::gil_scoped_release release;
    fastntk::fc_tiles(k, t, B, n1, n2, v1, v2, scales2.data(), n_act, op.data(), static_cast<int>(op.size()), rho_tol);
}

// A window pass's index table (m, taps) (its rows m, taps): C-contiguous int64, every entry below the n input
// positions (< 0: SAME padding's zero); `at` starts the messages.
std::pair<idx, idx> check_index(const Array<std::int64_t>& index, idx n, const std::string& at) {
    if (index.ndim() != 2 || !(index.flags() & py::array::c_style))
        throw std::invalid_argument(at + "index must be a C-contiguous 2-D int64 array (m, taps); got " + dims(index));
    const idx m = index.shape(0), taps = index.shape(1);
    for (idx q = 0; q < m * taps; ++q)
        if (index.data()[q] >= n)
            throw std::invalid_argument(at + "index holds " + std::to_string(index.data()[q]) + ", beyond n = " +
                                        std::to_string(n));
    return {m, taps};
}

// A window pass's rule from its 5 numbers; `at` starts the message.
fastntk::ConvRule read_rule(const py::sequence& rule, const std::string& at) {
    if (rule.size() != 5)
        throw std::invalid_argument(at + "rule must hold 5 numbers (k_scale, k_offset, t_from_k, t_scale, t_offset)");
    return {rule[0].cast<double>(), rule[1].cast<double>(), rule[2].cast<double>(), rule[3].cast<double>(),
            rule[4].cast<double>()};
}

// A Conv's rule with all its taps in one pass (fastntk::conv_window): k, t (A, n, n, C) pair arrays or (A, n, C),
// t None for T = 0; into k_out, t_out (A, m, m, C) / (A, m, C); rule (k_scale, k_offset, t_from_k, t_scale,
// t_offset). ops (one activation) not None: the outputs then go through it, with the variances of the rows'
// and the columns' positions: pair arrays var1 (A, m), var2 (1 or A, m C); one-position arrays (A = 1)
// var1 (m, n1), var2 (m, n2), each position's C = n1 n2 entries an (n1, n2) tile.
void conv_window(const Array<double>& k, py::object t_obj, Array<double> k_out, Array<double> t_out,
                 const Array<std::int64_t>& index, const py::sequence& rule, py::object ops_obj, py::object var1_obj,
                 py::object var2_obj, double rho_tol) {
    const bool pair = k.ndim() == 4;
    if (!pair && k.ndim() != 3) throw std::invalid_argument("k must be 4-D (A, n, n, C) or 3-D (A, n, C); got " + dims(k));
    const idx A = k.shape(0), n = k.shape(1), C = k.shape(pair ? 3 : 2);
    const auto [m, taps] = check_index(index, n, "");
    const std::vector<idx> in_shape = pair ? std::vector<idx>{A, n, n, C} : std::vector<idx>{A, n, C};
    const std::vector<idx> out_shape = pair ? std::vector<idx>{A, m, m, C} : std::vector<idx>{A, m, C};
    const double* kin = contiguous(k, "k", in_shape);
    const std::int64_t* ix = index.data();
    Array<double> t;
    const double* tin = nullptr;
    if (!t_obj.is_none()) {
        if (!py::isinstance<Array<double>>(t_obj)) throw std::invalid_argument("t must be None or a float64 array");
        t = py::reinterpret_borrow<Array<double>>(t_obj);
        tin = contiguous(t, "t", in_shape);
    }
    double* ko = const_cast<double*>(contiguous(k_out, "k_out", out_shape));
    double* to = const_cast<double*>(contiguous(t_out, "t_out", out_shape));
    check_writeable(k_out, "k_out");
    check_writeable(t_out, "t_out");
    for (const auto& [a, name] : {std::pair<const py::array&, const char*>{k, "k"}, {k_out, "k_out"}})
        if (overlaps(t_out, a)) throw std::invalid_argument(std::string("t_out must not share memory with ") + name);
    if (overlaps(k_out, k)) throw std::invalid_argument("k_out must not share memory with k");
    if (tin && (overlaps(k_out, t) || overlaps(t_out, t)))
        throw std::invalid_argument("k_out and t_out must not share memory with t");
    const fastntk::ConvRule r = read_rule(rule, "");
    std::vector<fastntk::Op> op;
    std::vector<double> scales2;
    Array<double> var1, var2;
    fastntk::RowOps act{};
    if (!ops_obj.is_none()) {
        idx n_act;
        op = read_ops(py::cast<Array<double>>(ops_obj), &n_act);
        if (n_act != 1) throw std::invalid_argument("ops must hold exactly one activation; got " + std::to_string(n_act));
        var1 = py::cast<Array<double>>(var1_obj);
        var2 = py::cast<Array<double>>(var2_obj);
        idx S, width;  // rows of var2, entries per row
        if (pair) {
            contiguous(var1, "var1", {A, m});
            S = var2.ndim() == 2 ? var2.shape(0) : 0;
            if (S != 1 && S != A)
                throw std::invalid_argument("var2 must have shape (1, m C) or (A, m C); got " + dims(var2));
            width = m * C;
        } else {
            if (A != 1) throw std::invalid_argument("ops with one-position arrays needs A = 1; got " + dims(k));
            const idx n1 = var1.ndim() == 2 ? var1.shape(1) : -1;
            width = var2.ndim() == 2 ? var2.shape(1) : -1;
            if (n1 < 0 || width < 1 || n1 * width != C)
                throw std::invalid_argument("var1 (m, n1) and var2 (m, n2) with n1 n2 = C = " + std::to_string(C) +
                                            " needed; got " + dims(var1) + " and " + dims(var2));
            contiguous(var1, "var1", {m, n1});
            S = m;
        }
        contiguous(var2, "var2", {S, width});
        scales2 = column_scales(var2, S, width, width);
        act = {op.data(), static_cast<int>(op.size()), var1.data(), var2.data(), scales2.data(),
               pair ? (S == 1 ? 0 : width) : width, rho_tol};
    }
    enter_kernel();
    py::gil_scoped_release release;
    fastntk::conv_window(kin, tin, ko, to, A, n, C, m, pair, ix, taps, r, ops_obj.is_none() ? nullptr : &act);
}

// Steps of Convs (fastntk::conv_chain) on one-position arrays, a chunk of entries through all of them in cache:
// k (n, C), t (n, C) or None for T = 0; or k None and x1 (n1, n, c), x2t (n, c, width): K = the inputs' Gram per
// position, x1[i, q] . x2t[q, :, j] / c (T = 0); steps a sequence of (index (m, taps) int64, rule (5 numbers), ops
// (one activation) or None, var1 (m, n1), var2 (m, width)), each reading the previous step's m positions; C =
// n1 width (each position's entries an (n1, width) tile). k_out, t_out (C,): the mean over the last step's
// positions (Flatten); (m, C): every position. upper (with k_out (C,) only): the entries (i, j >= i) of the tile.
void conv_chain(py::object k_obj, py::object t_obj, const py::sequence& steps_obj, idx width, double rho_tol,
                Array<double> k_out, Array<double> t_out, bool upper, py::object x1_obj, py::object x2t_obj) {
    fastntk::ChainInput src{nullptr, nullptr, nullptr, nullptr, 0};
    Array<double> k, t, x1, x2t;
    idx n0, C;
    if (!k_obj.is_none()) {
        if (!py::isinstance<Array<double>>(k_obj)) throw std::invalid_argument("k must be None or a float64 array");
        k = py::reinterpret_borrow<Array<double>>(k_obj);
        if (k.ndim() != 2) throw std::invalid_argument("k must be 2-D (n, C); got " + dims(k));
        n0 = k.shape(0), C = k.shape(1);
        src.k = contiguous(k, "k", {n0, C});
    } else {
        if (!x1_obj.is_none() && !x2t_obj.is_none()) {
            x1 = py::cast<Array<double>>(x1_obj);
            x2t = py::cast<Array<double>>(x2t_obj);
        }
        if (x1.ndim() != 3 || x2t.ndim() != 3)
            throw std::invalid_argument("without k, x1 (n1, n, c) and x2t (n, c, width) are needed");
        n0 = x1.shape(1);
        src.channels = x1.shape(2);
        if (width != x2t.shape(2))
            throw std::invalid_argument("width must be x2t's last axis, " + std::to_string(x2t.shape(2)));
        C = x1.shape(0) * width;
        src.x1 = contiguous(x1, "x1", {x1.shape(0), n0, src.channels});
        src.x2t = contiguous(x2t, "x2t", {n0, src.channels, width});
        if (src.channels < 1) throw std::invalid_argument("x1 and x2t need at least one channel");
    }
    if (width < 1 || C % width != 0)
        throw std::invalid_argument("width must divide C = " + std::to_string(C) + "; got " + std::to_string(width));
    const idx n1 = C / width;
    if (!t_obj.is_none()) {
        if (!src.k) throw std::invalid_argument("t needs k (the Gram of x1 and x2t has T = 0)");
        if (!py::isinstance<Array<double>>(t_obj)) throw std::invalid_argument("t must be None or a float64 array");
        t = py::reinterpret_borrow<Array<double>>(t_obj);
        src.t = contiguous(t, "t", {n0, C});
    }
    const idx n_steps = static_cast<idx>(steps_obj.size());
    if (n_steps < 1) throw std::invalid_argument("steps must hold at least one step");
    std::vector<fastntk::ChainStep> steps(static_cast<std::size_t>(n_steps));
    std::vector<Array<std::int64_t>> indices;
    std::vector<Array<double>> vars;
    std::vector<std::vector<fastntk::Op>> ops(static_cast<std::size_t>(n_steps));
    std::vector<std::vector<double>> scales(static_cast<std::size_t>(n_steps));
    std::vector<fastntk::RowOps> acts(static_cast<std::size_t>(n_steps));
    idx n = n0;
    for (idx s = 0; s < n_steps; ++s) {
        const auto step = py::cast<py::sequence>(steps_obj[s]);
        const std::string at = "steps[" + std::to_string(s) + "]";
        if (step.size() != 5) throw std::invalid_argument(at + " must be (index, rule, ops, var1, var2)");
        indices.push_back(py::cast<Array<std::int64_t>>(step[0]));
        const auto [m, taps] = check_index(indices.back(), n, at + ": ");
        steps[s] = {indices.back().data(), n, m, taps, read_rule(py::cast<py::sequence>(step[1]), at + ": "), nullptr};
        if (!step[2].is_none()) {
            idx n_act;
            ops[s] = read_ops(py::cast<Array<double>>(step[2]), &n_act);
            if (n_act != 1) throw std::invalid_argument(at + ": ops must hold exactly one activation");
            vars.push_back(py::cast<Array<double>>(step[3]));
            const double* v1 = contiguous(vars.back(), (at + ": var1").c_str(), {m, n1});
            vars.push_back(py::cast<Array<double>>(step[4]));
            const double* v2 = contiguous(vars.back(), (at + ": var2").c_str(), {m, width});
            scales[s] = column_scales(vars.back(), m, width, width);
            acts[s] = {ops[s].data(), static_cast<int>(ops[s].size()), v1, v2, scales[s].data(), width, rho_tol};
            steps[s].act = &acts[s];
        }
        n = m;
    }
    const bool flatten = k_out.ndim() == 1;
    if (upper && !flatten) throw std::invalid_argument("upper needs k_out, t_out of shape (C,) (the mean over positions)");
    const std::vector<idx> out_shape = flatten ? std::vector<idx>{C} : std::vector<idx>{n, C};
    double* ko = const_cast<double*>(contiguous(k_out, "k_out", out_shape));
    double* to = const_cast<double*>(contiguous(t_out, "t_out", out_shape));
    check_writeable(k_out, "k_out");
    check_writeable(t_out, "t_out");
    if (overlaps(k_out, t_out))
        throw std::invalid_argument("k_out and t_out must not share memory with each other or with the inputs");
    for (const Array<double>* a : {&k, &t, &x1, &x2t})
        if (overlaps(k_out, *a) || overlaps(t_out, *a))
            throw std::invalid_argument("k_out and t_out must not share memory with each other or with the inputs");
    enter_kernel();
    py::gil_scoped_release release;
    fastntk::conv_chain(src, steps.data(), n_steps, C, width, flatten, upper, ko, to);
}

// fastntk::cholesky_upper in place on a (n, n) float64 array in Fortran order (a column stride of
// at least n), with ?potrf, ?trsm and ?gemm from the capsules (scipy.linalg.cython_lapack and
// cython_blas), threaded as the caller has set the BLAS. Returns LAPACK's info.
int cholesky_upper(py::array_t<double, 0> a, idx block, const py::capsule& potrf, const py::capsule& trsm,
                   const py::capsule& gemm) {
    if (a.ndim() != 2 || a.shape(0) != a.shape(1)) throw std::invalid_argument("a must be square; got " + dims(a));
    const idx n = a.shape(0);
    check_writeable(a, "a");
    if (n > 1 && (a.strides(0) != static_cast<py::ssize_t>(sizeof(double)) ||
                  a.strides(1) < n * static_cast<py::ssize_t>(sizeof(double)) || a.strides(1) % sizeof(double) != 0))
        throw std::invalid_argument("a must be in Fortran order (contiguous columns)");
    const idx lda = n > 1 ? a.strides(1) / static_cast<idx>(sizeof(double)) : std::max<idx>(n, 1);
    if (lda > INT_MAX) throw std::invalid_argument("cholesky_upper: the order exceeds the BLAS integer range");
    if (block < 1) throw std::invalid_argument("block must be at least 1");
    const fastntk::CholeskyBlas<double> blas{blas_from<fastntk::Potrf<double>>(potrf),
                                             blas_from<fastntk::Trsm<double>>(trsm),
                                             blas_from<fastntk::Gemm<double>>(gemm)};
    double* data = a.mutable_data();
    py::gil_scoped_release release;
    return fastntk::cholesky_upper(data, n, lda, block, blas);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastntk compiled kernels (see cpp/include/fastntk)";
    m.def("fc_tile", &fc_tile<double>, "Walk a tile of Sigma12 (and Theta12) through all ops.", py::arg("sigma").noconvert(),
          py::arg("nngp"), py::arg("ntk"), py::arg("var1").noconvert(), py::arg("var2").noconvert(), py::arg("ops").noconvert(), py::arg("rho_tol"));
    m.def("fc_tile", &fc_tile<float>, "Walk a tile of Sigma12 (and Theta12) through all ops.", py::arg("sigma").noconvert(),
          py::arg("nngp"), py::arg("ntk"), py::arg("var1").noconvert(), py::arg("var2").noconvert(), py::arg("ops").noconvert(), py::arg("rho_tol"));
    m.def("fc_tile_entries", &fc_tile<double, true>, "fc_tile one entry at a time: the GPU kernels' code on the host.",
          py::arg("sigma").noconvert(), py::arg("nngp"), py::arg("ntk"), py::arg("var1").noconvert(),
          py::arg("var2").noconvert(), py::arg("ops").noconvert(), py::arg("rho_tol"));
    m.def("fc_tile_entries", &fc_tile<float, true>, "fc_tile one entry at a time: the GPU kernels' code on the host.",
          py::arg("sigma").noconvert(), py::arg("nngp"), py::arg("ntk"), py::arg("var1").noconvert(),
          py::arg("var2").noconvert(), py::arg("ops").noconvert(), py::arg("rho_tol"));
    m.def("fc_gram_tile", &fc_gram_tile<double>, "fc_tile of the Gram x1 . x2, computed sub-tile by sub-tile by a BLAS gemm.",
          py::arg("x1").noconvert(), py::arg("x2").noconvert(), py::arg("nngp"), py::arg("ntk"), py::arg("var1").noconvert(),
          py::arg("var2").noconvert(), py::arg("ops").noconvert(), py::arg("rho_tol"), py::arg("gemm"), py::arg("self_gram"));
    m.def("fc_gram_tile", &fc_gram_tile<float>, "fc_tile of the Gram x1 . x2, computed sub-tile by sub-tile by a BLAS gemm.",
          py::arg("x1").noconvert(), py::arg("x2").noconvert(), py::arg("nngp"), py::arg("ntk"), py::arg("var1").noconvert(),
          py::arg("var2").noconvert(), py::arg("ops").noconvert(), py::arg("rho_tol"), py::arg("gemm"), py::arg("self_gram"));
    m.def("fc_tiles", &fc_tiles, "Walk B tiles of Sigma12 (and Theta12) through ops in place, rows of all tiles in parallel.",
          py::arg("sigma").noconvert(), py::arg("ntk"), py::arg("var1").noconvert(), py::arg("var2").noconvert(),
          py::arg("ops").noconvert(), py::arg("rho_tol"));
    m.def("conv_chain", &conv_chain, "Steps of Convs on one-position arrays, a chunk of entries through all of them in cache.",
          py::arg("k"), py::arg("t"), py::arg("steps"), py::arg("width"), py::arg("rho_tol"),
          py::arg("k_out").noconvert(), py::arg("t_out").noconvert(), py::arg("upper") = false,
          py::arg("x1") = py::none(), py::arg("x2t") = py::none());
    m.def("conv_window", &conv_window, "A Conv's rule with all its taps in one pass, optionally the activation after it.",
          py::arg("k").noconvert(), py::arg("t"), py::arg("k_out").noconvert(), py::arg("t_out").noconvert(),
          py::arg("index").noconvert(), py::arg("rule"), py::arg("ops") = py::none(), py::arg("var1") = py::none(),
          py::arg("var2") = py::none(), py::arg("rho_tol") = 0.0);
    m.def("fc_diagonal", &fc_diagonal, "Per-point Sigma(x, x), Theta(x, x) and activation variances, in place.",
          py::arg("nngp").noconvert(), py::arg("ntk"), py::arg("var").noconvert(), py::arg("ops").noconvert());
    m.def("cholesky_upper", &cholesky_upper, "Blocked Cholesky U^T U = a in place (Fortran order), LAPACK's info.",
          py::arg("a").noconvert(), py::arg("block"), py::arg("potrf"), py::arg("trsm"), py::arg("gemm"));
    m.def("mirror_upper", &mirror_upper<double>, "Copy the upper triangle onto the lower.", py::arg("a").noconvert());
    m.def("mirror_upper", &mirror_upper<float>, "Copy the upper triangle onto the lower.", py::arg("a").noconvert());
    m.def("atan2", &binary_array<fastntk::atan2_v>, "Vectorisable atan2 used by the kernels (for tests).",
          py::arg("y").noconvert(), py::arg("x").noconvert(), py::arg("out").noconvert());
    m.def("angle_from_cos_sin", &binary_array<fastntk::angle_from_cos_sin>,
          "The ReLU family's angle from its cosine and sine (for tests).", py::arg("rho").noconvert(),
          py::arg("s").noconvert(), py::arg("out").noconvert());
    m.def("set_num_threads", &set_num_threads, "Set the OpenMP thread count.", py::arg("n"));
    m.def("get_num_threads", &get_num_threads, "OpenMP thread count.");
    m.def("fwht", &fwht<double>, "Rows of a <- a H_n in place (unnormalised Walsh-Hadamard, Sylvester order).",
          py::arg("a").noconvert());
    m.def("fwht", &fwht<float>, "Rows of a <- a H_n in place (unnormalised Walsh-Hadamard, Sylvester order).",
          py::arg("a").noconvert());
    m.def("fwht", &fwht_dtype, "Diagnose an fwht call of the wrong dtype.", py::arg("a").noconvert());
    m.def("tensor_srht", &tensor_srht<double>, "out <- TensorSRHT of the row pairs of x and y (Ahle et al. 2020).",
          py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("signs_x").noconvert(),
          py::arg("signs_y").noconvert(), py::arg("index_x").noconvert(), py::arg("index_y").noconvert(),
          py::arg("out").noconvert());
    m.def("tensor_srht", &tensor_srht<float>, "out <- TensorSRHT of the row pairs of x and y (Ahle et al. 2020).",
          py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("signs_x").noconvert(),
          py::arg("signs_y").noconvert(), py::arg("index_x").noconvert(), py::arg("index_y").noconvert(),
          py::arg("out").noconvert());
    m.def("fourier_products", &fourier_products<double>,
          "out <- the Fourier TensorSRHT's products of two half spectra (features.py's _FourierSketch).",
          py::arg("ha").noconvert(), py::arg("hb").noconvert(), py::arg("ia").noconvert(), py::arg("ib").noconvert(),
          py::arg("sa").noconvert(), py::arg("sb").noconvert(), py::arg("n_real"), py::arg("scale"),
          py::arg("real_scale"), py::arg("out").noconvert());
    m.def("fourier_products", &fourier_products<float>,
          "out <- the Fourier TensorSRHT's products of two half spectra (features.py's _FourierSketch).",
          py::arg("ha").noconvert(), py::arg("hb").noconvert(), py::arg("ia").noconvert(), py::arg("ib").noconvert(),
          py::arg("sa").noconvert(), py::arg("sb").noconvert(), py::arg("n_real"), py::arg("scale"),
          py::arg("real_scale"), py::arg("out").noconvert());
    m.def("tensor_srht", &tensor_srht_dtype, "Diagnose a tensor_srht call of mismatched dtypes.",
          py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("signs_x").noconvert(),
          py::arg("signs_y").noconvert(), py::arg("index_x").noconvert(), py::arg("index_y").noconvert(),
          py::arg("out").noconvert());
    // The op codes of cpp/include/fastntk/fc.hpp (OpKind), by name: Python reads them from here.
    py::dict op_kinds;
    using fastntk::OpKind;
    for (const auto& [name, kind] : {std::pair<const char*, OpKind>{"input", OpKind::Input}, {"dense_ntk", OpKind::DenseNtk},
                                     {"dense_standard", OpKind::DenseStandard}, {"abrelu", OpKind::ABRelu},
                                     {"erf", OpKind::Erf}, {"sin", OpKind::Sin}, {"gelu", OpKind::Gelu},
                                     {"exp", OpKind::Exp}, {"gaussian", OpKind::Gaussian},
                                     {"exp_normalized", OpKind::ExpNormalized}, {"rbf", OpKind::Rbf},
                                     {"sign", OpKind::Sign}, {"gabor", OpKind::Gabor}, {"monomial", OpKind::Monomial},
                                     {"rectified_monomial", OpKind::RectifiedMonomial},
                                     {"polynomial", OpKind::Polynomial}, {"hermite", OpKind::Hermite}})
        op_kinds[name] = static_cast<int>(kind);
    m.attr("op_kinds") = op_kinds;
    m.attr("max_rectified_degree") = fastntk::kMaxRectifiedDegree;
#if defined(__unix__) || defined(__APPLE__)
    pthread_atfork(before_fork, nullptr, in_child);
#endif
    m.attr("has_openmp") =
#ifdef _OPENMP
        true;
#else
        false;
#endif
}
