/* Fused per-element passes of the engine's hot path (see kernels.py, which loads this with ctypes).

Each function reads a float64 or float32 array once and does what took NumPy several passes and
temporary arrays: extremes, per-row sums and sums of squares, zero / non-finite / saturated counts
(scan); histogram counts on the adaptive 2**e grid or on fixed edges (hist_*); tanh, sigmoid and
ReLU, alone or with the histograms of their input and output (layer); the units never zero (alive).
Statistics are computed in double whatever the input, by exactly the rules of stats.py's NumPy code
(the tests compare the two), so these are a faster road to the same numbers; tanh and sigmoid are
within a few ulp of the exact values, in float arithmetic for float32.

No Python API is used: the functions only need C arrays, and ctypes releases the GIL while they run,
so the engine's two threads run them in parallel. Hot loops get an AVX2 + FMA clone on x86-64 chosen
at load time (the same clone every time on a given machine, so results are repeatable).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HOT
#endif

#define SUB 8 /* interleaved copies of the histogram counts (4: 15-20% slower at 50-80 bins) */

/* ---- scan: extremes, row sums, counts ------------------------------------------------------- */
/* res[0], res[1] = min, max (over all values: inf when there is one, NaN ignored); res[2], res[3] =
   sum and sum of squares; res[5..8] = non-finite, zero, above sat_high, below sat_low counts.
   row_s, row_q: per row, the sum and sum of squares. With a non-finite value the sums are
   meaningless and the caller takes its general path. The main loop counts no non-finite values: an
   inf or NaN makes its row's sum or sum of squares non-finite, and only then are they counted, in a
   second pass (finite values past ~1e154 also overflow a sum of squares; that pass then finds
   none). Without saturation thresholds (both infinite) the loop does not compare against them.
   float32 rows take two loops: extremes and counts in eight float lanes (32-bit counters,
   thresholds as the floats that compare alike), then the sums in double; one loop mixing the two
   widths ran 40% slower. */
#define SCAN_ROW(T, SAT)                                                                         \
    _Pragma("omp simd reduction(+:s,q,zero,above,below) reduction(min:rlo) reduction(max:rhi)")  \
    for (int64_t j = 0; j < cols; j++) {                                                          \
        double v = (double)r[j];                                                                  \
        s += v;                                                                                   \
        q += v * v;                                                                               \
        rlo = v < rlo ? v : rlo;                                                                  \
        rhi = v > rhi ? v : rhi;                                                                  \
        zero += v == 0.0;                                                                         \
        if (SAT) {                                                                                \
            above += v > sat_high;                                                                \
            below += v < sat_low;                                                                 \
        }                                                                                         \
    }

#define SCAN_ROW_FLOAT(SAT)                                                                      \
    {                                                                                             \
        float flo = INFINITY, fhi = -INFINITY;                                                    \
        int32_t fzero = 0, fabove = 0, fbelow = 0;                                                \
        _Pragma("omp simd reduction(+:fzero,fabove,fbelow) reduction(min:flo) reduction(max:fhi)") \
        for (int64_t j = 0; j < cols; j++) {                                                      \
            float v = (float)r[j];                                                                \
            flo = v < flo ? v : flo;                                                              \
            fhi = v > fhi ? v : fhi;                                                              \
            fzero += v == 0.0f;                                                                   \
            if (SAT) {                                                                            \
                fabove += v > high_f;                                                             \
                fbelow += v < low_f;                                                              \
            }                                                                                     \
        }                                                                                         \
        _Pragma("omp simd reduction(+:s,q)")                                                     \
        for (int64_t j = 0; j < cols; j++) {                                                      \
            double v = (double)r[j];                                                              \
            s += v;                                                                               \
            q += v * v;                                                                           \
        }                                                                                         \
        rlo = flo;                                                                                \
        rhi = fhi;                                                                                \
        zero = fzero;                                                                             \
        above = fabove;                                                                           \
        below = fbelow;                                                                           \
    }

/* the largest float <= t: for a float x, x > t exactly when x > float_at_most(t) */
static float float_at_most(double t) {
    if (t > FLT_MAX) return t == INFINITY ? INFINITY : FLT_MAX;
    if (t < -FLT_MAX) return -INFINITY;
    float f = (float)t;
    return (double)f > t ? nextafterf(f, -INFINITY) : f;
}

#define SCAN(T)                                                                                  \
    HOT static void scan_##T(const T *x, int64_t rows, int64_t cols, double sat_low,             \
                             double sat_high, double *row_s, double *row_q, double *res) {         \
        double lo = INFINITY, hi = -INFINITY, total = 0.0, sumsq = 0.0;                           \
        int64_t n_zero = 0, n_above = 0, n_below = 0, suspect = 0;                                \
        int sat = !(isinf(sat_low) && isinf(sat_high));                                          \
        int in_floats = sizeof(T) == sizeof(float) && cols <= INT32_MAX;                         \
        float high_f = float_at_most(sat_high), low_f = -float_at_most(-sat_low); /* x < t: x < low_f */ \
        for (int64_t i = 0; i < rows; i++) {                                                      \
            const T *r = x + i * cols;                                                            \
            double s = 0.0, q = 0.0, rlo = INFINITY, rhi = -INFINITY;                             \
            int64_t zero = 0, above = 0, below = 0;                                               \
            if (in_floats && sat) {                                                               \
                SCAN_ROW_FLOAT(1)                                                                 \
            } else if (in_floats) {                                                               \
                SCAN_ROW_FLOAT(0)                                                                 \
            } else if (sat) {                                                                     \
                SCAN_ROW(T, 1)                                                                    \
            } else {                                                                              \
                SCAN_ROW(T, 0)                                                                    \
            }                                                                                     \
            row_s[i] = s;                                                                         \
            row_q[i] = q;                                                                         \
            total += s;                                                                           \
            sumsq += q;                                                                           \
            suspect |= !(fabs(s) <= DBL_MAX && q <= DBL_MAX);                                     \
            lo = rlo < lo ? rlo : lo;                                                             \
            hi = rhi > hi ? rhi : hi;                                                             \
            n_zero += zero;                                                                       \
            n_above += above;                                                                     \
            n_below += below;                                                                     \
        }                                                                                         \
        int64_t n_bad = 0;                                                                        \
        if (suspect) {                                                                            \
            int64_t n = rows * cols;                                                              \
            _Pragma("omp simd reduction(+:n_bad)")                                               \
            for (int64_t i = 0; i < n; i++) n_bad += !(fabs((double)x[i]) <= DBL_MAX);            \
        }                                                                                         \
        res[0] = lo;                                                                              \
        res[1] = hi;                                                                              \
        res[2] = total;                                                                           \
        res[3] = sumsq;                                                                           \
        res[5] = (double)n_bad;                                                                   \
        res[6] = (double)n_zero;                                                                  \
        res[7] = (double)n_above;                                                                 \
        res[8] = (double)n_below;                                                                 \
    }

/* The spread across units of each row (sample) of a finite chunk, from its sums (stats.py's
   TensorStats._update_units, operation for operation, so no product is fused with an addition):
   returns the number of "clear" rows, whose variance is precise (mean^2 / var below cancel)
   and whose units certainly differ (std above sym_tol * |mean|), and in *spread the sum of their
   stds. -1 when the chunk's mean^2 / var is not below cancel: the caller centres the chunk first. */
__attribute__((optimize("fp-contract=off"))) static int64_t units_spread(
    const double *row_s, const double *row_q, int64_t rows, int64_t cols, double total, double sumsq,
    double sym_tol, double cancel, double *spread) {
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF /* clang ignores the attribute above; GCC ignores this pragma */
#endif
    double n = (double)(rows * cols), units = (double)cols, sum = 0.0;
    if (!((sumsq - total * (total / n)) * cancel > total * (total / n))) return -1;
    int64_t clear = 0;
    for (int64_t i = 0; i < rows; i++) {
        double mean = row_s[i] / units;
        double var = row_q[i] / units - mean * mean;
        double t = sym_tol * mean;
        if (fabs(var) <= DBL_MAX && var * cancel > mean * mean && var > t * t) {
            clear++;
            sum += sqrt(var);
        }
    }
    *spread = sum;
    return clear;
}

/* ---- units alive ----------------------------------------------------------------------------- */
/* alive[j] |= (x[i, j] != 0) over the rows i of a (rows, cols) array (NaN counts, as in NumPy's
   x != 0), row after row in one vector loop, stopping once every unit is alive (checked every 16
   rows). Deep in a ReLU net many units are zero for most samples, some for all: for 500 x 500
   floats a gather of the columns still dead took NumPy 150 us, C 50 us; this pass takes 30.
   Returns the number left dead. */
#define ALIVE(T)                                                                                 \
    HOT static int64_t alive_##T(const T *x, int64_t rows, int64_t cols, uint8_t *alive) {        \
        int64_t left = 0;                                                                         \
        for (int64_t j = 0; j < cols; j++) left += !alive[j];                                     \
        for (int64_t i = 0; i < rows && left > 0; i++) {                                          \
            const T *r = x + i * cols;                                                            \
            _Pragma("omp simd")                                                                  \
            for (int64_t j = 0; j < cols; j++) alive[j] |= r[j] != (T)0;                          \
            if ((i & 15) == 15 || i == rows - 1) {                                                \
                left = 0;                                                                         \
                _Pragma("omp simd reduction(+:left)")                                            \
                for (int64_t j = 0; j < cols; j++) left += !alive[j];                             \
            }                                                                                     \
        }                                                                                         \
        return left;                                                                              \
    }

ALIVE(double)
ALIVE(float)

/* ---- histograms ----------------------------------------------------------------------------- */
/* Bins are computed a block at a time (a vector loop), then counted into SUB interleaved copies
   (a run of equal bins, as in a saturated layer, does not wait on one counter) of 32-bit counters,
   which take half the cache of 64-bit ones; they are added to the 64-bit counts every FLUSH values,
   long before they could overflow. */
#define BLOCK 512
#define FLUSH ((int64_t)1 << 30)

typedef struct {
    int64_t width, seen; /* slots per copy; values counted since the last flush */
    uint32_t *sub;       /* SUB copies of width slots */
    int64_t *counts;     /* width slots; or, for a table of width / cols rows of cols slots, ... */
    int64_t *row_sums, *col_sums, cols; /* ... its row sums and column sums (cols > 0) */
} Counter;

static int counter_open(Counter *c, int64_t width, int64_t *counts) {
    c->width = width;
    c->seen = 0;
    c->counts = counts;
    c->row_sums = c->col_sums = NULL;
    c->cols = 0;
    c->sub = calloc((size_t)(SUB * width), sizeof(uint32_t));
    return c->sub ? 0 : -1;
}

/* a table's counter: slot r * cols + q counts in row_sums[r] and col_sums[q] */
static int counter_open_table(Counter *c, int64_t rows, int64_t cols, int64_t *row_sums, int64_t *col_sums) {
    int failed = counter_open(c, rows * cols, NULL);
    c->row_sums = row_sums;
    c->col_sums = col_sums;
    c->cols = cols;
    return failed;
}

static inline int64_t counter_take(Counter *c, int64_t b) {
    int64_t v = 0;
    for (int k = 0; k < SUB; k++) {
        v += c->sub[k * c->width + b];
        c->sub[k * c->width + b] = 0;
    }
    return v;
}

static void counter_flush(Counter *c) {
    if (c->cols)
        for (int64_t r = 0, b = 0; b < c->width; r++)
            for (int64_t q = 0; q < c->cols; q++, b++) {
                int64_t v = counter_take(c, b);
                c->row_sums[r] += v;
                c->col_sums[q] += v;
            }
    else
        for (int64_t b = 0; b < c->width; b++) c->counts[b] += counter_take(c, b);
    c->seen = 0;
}

static void count_block(Counter *c, const int32_t *idx, int64_t m) {
    uint32_t *sub = c->sub;
    int64_t width = c->width, i = 0;
    if (c->seen + m > FLUSH) counter_flush(c);
    for (; i + SUB <= m; i += SUB)
        for (int k = 0; k < SUB; k++) sub[k * width + idx[i + k]]++;
    for (; i < m; i++) sub[idx[i]]++;
    c->seen += m;
}

static void counter_close(Counter *c) {
    counter_flush(c);
    free(c->sub);
}

/* A histogram's grid: how a value's bin is found (bins_float / bins_double, a block at a time).
   Adaptive (fixed 0): bin floor(x * scale) - start, scale = 2**-e (exact). A negative x whose product
   underflowed to -0.0 belongs in bin floor = -1. Finite x only, all inside the grid: a value that
   is not (a caller's bug) goes to the extra slot (bins), never out of bounds.
   For float32 data whose bins and start lie below 2**24 in magnitude the bins are computed in
   float (eight lanes, "narrow"): there a product by a power of two, its floor and the difference
   of two whole numbers below 2**24 are exact, as they are in double.
   Fixed edges on [lo, hi] (fixed 1): bin floor(x * scale) + shift when shift is a whole number
   (has_shift), else floor((x - lo) * scale); x == hi (or rounding onto it) goes in the last bin;
   values below lo and above hi go to slots bins and bins + 1. Finite x only.
   float32 data, with scale, lo and hi floats and |shift| + bins below 2**23 (tanh's and sigmoid's
   grids), is binned in float (narrow) with the same result: x * scale in double is exact (24 + 24
   bits), and so is floor of it from the float product p and its exact error e = fma(x, scale, -p):
   rounding cannot carry p past a whole number below 2**23, so the floor is floor(p), less one where
   p is whole and e < 0; a negative x whose product rounded to 0 is in bin -1 (as -0.0 * scale is 0). */
typedef struct {
    int fixed, has_shift, narrow;
    double lo, hi, scale, shift, start;
    int64_t bins, slots; /* slots: bins + 1 (adaptive) or bins + 2 (fixed) */
} Grid;

static Grid grid_adaptive(int f32, double scale, double start, int64_t bins) {
    Grid g = {0, 0, f32 && fabs(start) + (double)bins < 16777216.0, 0.0, 0.0, scale, 0.0, start, bins, bins + 1};
    return g;
}

static Grid grid_fixed(int f32, double lo, double hi, double scale, double shift, int has_shift, int64_t bins) {
    int narrow = f32 && has_shift && (double)(float)scale == scale && (double)(float)lo == lo &&
                 (double)(float)hi == hi && fabs(shift) + (double)bins < 8388608.0;
    Grid g = {1, has_shift, narrow, lo, hi, scale, shift, 0.0, bins, bins + 2};
    return g;
}

#define ADAPTIVE_BINS(U, FLOOR)                                                                  \
    _Pragma("omp simd")                                                                          \
    for (int64_t i = 0; i < m; i++) {                                                             \
        U v = (U)xb[i];                                                                           \
        U f = FLOOR(v * (U)scale);                                                                \
        f = ((f == (U)0) & (v < (U)0)) ? (U)-1 : f;                                               \
        f -= (U)start;                                                                            \
        idx[i] = ((f >= (U)0) & (f < (U)bins)) ? (int32_t)f : (int32_t)bins;                      \
    }

/* NARROW and SHIFT are constants, so that each loop is one branch-free vector loop */
#define FIXED_BINS(U, FLOOR, FMA, NARROW, SHIFT)                                                 \
    _Pragma("omp simd")                                                                          \
    for (int64_t i = 0; i < m; i++) {                                                             \
        U v = (U)xb[i];                                                                           \
        U f;                                                                                      \
        if (NARROW) {                                                                             \
            U p = v * (U)scale;                                                                   \
            U e = FMA(v, (U)scale, -p);                                                           \
            f = FLOOR(p);                                                                         \
            f = ((f == p) & (e < (U)0)) ? f - (U)1 : f;                                           \
            f = ((p == (U)0) & (v < (U)0)) ? (U)-1 : f;                                           \
            f += (U)shift;                                                                        \
        } else {                                                                                  \
            f = SHIFT ? FLOOR(v * (U)scale) + (U)shift : FLOOR((v - (U)lo) * (U)scale);           \
        }                                                                                         \
        f = f < (U)(bins - 1) ? f : (U)(bins - 1);                                                \
        f = v < (U)lo ? (U)bins : (v > (U)hi ? (U)(bins + 1) : f);                                \
        idx[i] = (int32_t)f;                                                                      \
    }

#define BINS(T)                                                                                  \
    __attribute__((always_inline)) static inline void bins_##T(const Grid *g, const T *xb,        \
                                                                int64_t m, int32_t *idx) {        \
        const double scale = g->scale, start = g->start, lo = g->lo, hi = g->hi, shift = g->shift; \
        const int64_t bins = g->bins;                                                             \
        if (!g->fixed) {                                                                          \
            if (g->narrow) {                                                                      \
                ADAPTIVE_BINS(float, floorf)                                                      \
            } else {                                                                              \
                ADAPTIVE_BINS(double, floor)                                                      \
            }                                                                                     \
        } else if (g->narrow) {                                                                   \
            FIXED_BINS(float, floorf, fmaf, 1, 1)                                                 \
        } else if (g->has_shift) {                                                                \
            FIXED_BINS(double, floor, fma, 0, 1)                                                  \
        } else {                                                                                  \
            FIXED_BINS(double, floor, fma, 0, 0)                                                  \
        }                                                                                         \
    }

/* counts: g->slots int64, zeroed by the caller; -1 when there is no memory for the work counts */
#define HIST(T)                                                                                  \
    HOT static int64_t hist_##T(const T *x, int64_t n, const Grid *g, int64_t *counts) {         \
        Counter c;                                                                                \
        int32_t idx[BLOCK];                                                                       \
        if (counter_open(&c, g->slots, counts)) return -1;                                        \
        for (int64_t b0 = 0; b0 < n; b0 += BLOCK) {                                               \
            int64_t m = n - b0 < BLOCK ? n - b0 : BLOCK;                                          \
            bins_##T(g, x + b0, m, idx);                                                          \
            count_block(&c, idx, m);                                                              \
        }                                                                                         \
        counter_close(&c);                                                                        \
        return 0;                                                                                 \
    }

/* ---- activations ---------------------------------------------------------------------------- */
/* expm1(r) for |r| <= ln2/2: Taylor to r^13 (truncation below 2e-17 relative), as r + r^2 q(r)
   with q by Estrin's scheme (pairs, then pairs of pairs: a chain of 5 dependent operations instead
   of Horner's 12, so the vector units are not left waiting on each other), and the leading r added
   last, where its rounding is smallest. */
static inline double expm1_small(double r) {
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double q = (0.5 + (1.0 / 6.0) * r) + r2 * (1.0 / 24.0 + (1.0 / 120.0) * r)
             + r4 * ((1.0 / 720.0 + (1.0 / 5040.0) * r) + r2 * (1.0 / 40320.0 + (1.0 / 362880.0) * r))
             + r8 * ((1.0 / 3628800.0 + (1.0 / 39916800.0) * r)
                     + r2 * (1.0 / 479001600.0 + (1.0 / 6227020800.0) * r));
    return r + r2 * q;
}

static inline double from_bits(uint64_t b) {
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static inline uint64_t to_bits(double d) {
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

#define SHIFTER 6755399441055744.0 /* 1.5 * 2**52: y + SHIFTER rounds y to an integer held in the low bits */
#define LN2_HI 6.93147180369123816490e-01 /* ln 2 = LN2_HI + LN2_LO; k * LN2_HI is exact */
#define LN2_LO 1.90821492927058770002e-10
#define INV_LN2 1.44269504088896338700e+00

/* exp(y) = 2**k (expm1(r) + 1), y = k ln2 + r, |r| <= ln2/2: returns expm1(r), and k in *k. */
static inline double exp_reduced(double y, int64_t *k) {
    double t = y * INV_LN2 + SHIFTER;
    double kf = t - SHIFTER;
    *k = (int64_t)(to_bits(t) & 0xfffffffffffff) - ((int64_t)1 << 51); /* round(y / ln2) */
    return expm1_small((y - kf * LN2_HI) - kf * LN2_LO);
}

static inline double pow2(int64_t k) { return from_bits((uint64_t)(k + 1023) << 52); } /* |k| <= 1022 */

/* The same in float arithmetic for float32 (eight lanes instead of four): expm1 to r^8 (truncation
   below 3e-9 relative, Estrin's scheme too), 2**k from float bits; a few float32 ulp. */
static inline float expm1_small_f(float r) {
    float r2 = r * r, r4 = r2 * r2;
    float q = (0.5f + (1.0f / 6.0f) * r) + r2 * (1.0f / 24.0f + (1.0f / 120.0f) * r)
            + r4 * (1.0f / 720.0f + (1.0f / 5040.0f) * r + r2 * (1.0f / 40320.0f));
    return r + r2 * q;
}

static inline float from_bits_f(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static inline uint32_t to_bits_f(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

#define SHIFTER_F 12582912.0f          /* 1.5 * 2**23 */
#define LN2_HI_F 0.693359375f          /* 9 bits: k * LN2_HI_F exact */
#define LN2_LO_F -2.12194440e-4f
#define INV_LN2_F 1.44269504f

static inline float exp_reduced_f(float y, int32_t *k) {
    float t = y * INV_LN2_F + SHIFTER_F;
    float kf = t - SHIFTER_F;
    *k = (int32_t)(to_bits_f(t) & 0x7fffff) - (1 << 22);
    return expm1_small_f((y - kf * LN2_HI_F) - kf * LN2_LO_F);
}

static inline float pow2_f(int32_t k) { return from_bits_f((uint32_t)(k + 127) << 23); } /* |k| <= 126 */

/* tanh(x) = E / (E + 2), E = expm1(2|x|) = 2**k (expm1(r) + 1) - 1, with the sign of x: no
   cancellation for small |x| (E ~ 2x), and |x| >= 20 (inf too) gives exactly +-1 (float: 10). */
static inline double tanh_d(double x) {
    double ax = fabs(x);
    int64_t k;
    double em1 = exp_reduced(2.0 * (ax < 20.0 ? ax : 20.0), &k), p2 = pow2(k); /* k <= 58 */
    double e = p2 * em1 + (p2 - 1.0);
    return x == x ? copysign(e / (e + 2.0), x) : x; /* NaN stays NaN */
}

static inline float tanh_f(float x) {
    float ax = fabsf(x);
    int32_t k;
    float em1 = exp_reduced_f(2.0f * (ax < 10.0f ? ax : 10.0f), &k), p2 = pow2_f(k); /* tanh(10) rounds to 1 */
    float e = p2 * em1 + (p2 - 1.0f);
    return x == x ? copysignf(e / (e + 2.0f), x) : x;
}

/* sigmoid from e = exp(-|x|): 1 / (1 + e) for x >= 0, e / (1 + e) below; e is right (subnormal,
   then 0) down to x = -745 (float: -104), as 2**k is applied in two factors (each a normal float)
   so that a subnormal result is rounded once; sigmoid(-inf) = 0, sigmoid(inf) = 1. */
static inline double sigmoid_d(double x) {
    double ax = fabs(x);
    int64_t k;
    double em1 = exp_reduced(-(ax < 746.0 ? ax : 746.0), &k);
    double e = (em1 + 1.0) * pow2(k >> 1) * pow2(k - (k >> 1));
    double s = 1.0 / (1.0 + e);
    return x == x ? (x >= 0.0 ? s : e * s) : x;
}

static inline float sigmoid_f(float x) {
    float ax = fabsf(x);
    int32_t k;
    float em1 = exp_reduced_f(-(ax < 105.0f ? ax : 105.0f), &k); /* e^-105 rounds to 0 */
    float e = (em1 + 1.0f) * pow2_f(k >> 1) * pow2_f(k - (k >> 1));
    float s = 1.0f / (1.0f + e);
    return x == x ? (x >= 0.0f ? s : e * s) : x;
}

/* max(x, 0) as NumPy's maximum(x, 0) gives it: +0 for -0, NaN kept (NumPy's loop takes 120 us for
   250,000 floats here, three times a copy). */
static inline double relu_d(double x) { return x > 0.0 || x != x ? x : 0.0; }
static inline float relu_f(float x) { return x > 0.0f || x != x ? x : 0.0f; }

/* Where e = exp(-|x|) is a normal float (|x| below 700, float: 86, so k >= -1021, float -125), 2**k
   is one exact scaling, made by adding k to the exponent bits of em1 + 1: the e of the two
   factors, bit for bit, in fewer operations. Not for NaN or beyond the limit. */
#define SIGMOID_LIMIT_D 700.0
#define SIGMOID_LIMIT_F 86.0f
static inline double sigmoid_normal_d(double x) {
    int64_t k;
    double em1 = exp_reduced(-fabs(x), &k);
    double e = from_bits(to_bits(em1 + 1.0) + ((uint64_t)k << 52));
    double s = 1.0 / (1.0 + e);
    return x >= 0.0 ? s : e * s;
}

static inline float sigmoid_normal_f(float x) {
    int32_t k;
    float em1 = exp_reduced_f(-fabsf(x), &k);
    float e = from_bits_f(to_bits_f(em1 + 1.0f) + ((uint32_t)k << 23));
    float s = 1.0f / (1.0f + e);
    return x >= 0.0f ? s : e * s;
}

/* phi over n values (out not overlapping z): one vector loop; sigmoid's takes the normal road and
   notes whether some |x| lies beyond it (or is NaN), and only then goes over those again. */
#define PHI_BLOCK(T, PHI)                                                                        \
    static inline void PHI##_block(const T *z, T *out, int64_t n) {                               \
        _Pragma("omp simd")                                                                      \
        for (int64_t i = 0; i < n; i++) out[i] = PHI(z[i]);                                       \
    }

#define SIGMOID_BLOCK(T, SUF, ABS, LIMIT)                                                        \
    static inline void sigmoid_##SUF##_block(const T *z, T *out, int64_t n) {                     \
        int far = 0;                                                                              \
        _Pragma("omp simd reduction(|:far)")                                                     \
        for (int64_t i = 0; i < n; i++) {                                                         \
            out[i] = sigmoid_normal_##SUF(z[i]);                                                  \
            far |= !(ABS(z[i]) < LIMIT);                                                          \
        }                                                                                         \
        if (far)                                                                                  \
            for (int64_t i = 0; i < n; i++)                                                       \
                if (!(ABS(z[i]) < LIMIT)) out[i] = sigmoid_##SUF(z[i]);                           \
    }

PHI_BLOCK(double, tanh_d)
PHI_BLOCK(float, tanh_f)
SIGMOID_BLOCK(double, d, fabs, SIGMOID_LIMIT_D)
SIGMOID_BLOCK(float, f, fabsf, SIGMOID_LIMIT_F)
PHI_BLOCK(double, relu_d)
PHI_BLOCK(float, relu_f)

#define UNARY(T, PHI)                                                                            \
    HOT static void PHI##_loop(const T *z, T *out, int64_t n) { PHI##_block(z, out, n); }

/* One backward step where phi' is a function of the post a (tanh (1 - a)(1 + a), sigmoid (1 - a) a,
   ReLU 1 where a > 0): gp = d * phi'(a) in one pass, returning the sum of phi'(a) (in double), where
   NumPy wrote phi' out, read it again for its sum and once more for the product. The same operations
   as activations.py's, in the same order (and no product to fuse with an addition): the same values. */
#define TANH_SLOPE(T, a) (((T)1 - (a)) * ((T)1 + (a)))
#define SIGMOID_SLOPE(T, a) (((T)1 - (a)) * (a))
#define RELU_SLOPE(T, a) ((a) > (T)0 ? (T)1 : (T)0)

#define BACKWARD(T, NAME, SLOPE)                                                                 \
    HOT static double NAME(const T *d, const T *a, T *gp, int64_t n) {                            \
        double sum = 0.0;                                                                         \
        _Pragma("omp simd reduction(+:sum)")                                                     \
        for (int64_t i = 0; i < n; i++) {                                                         \
            T slope = SLOPE(T, a[i]);                                                             \
            gp[i] = d[i] * slope;                                                                 \
            sum += (double)slope;                                                                 \
        }                                                                                         \
        return sum;                                                                               \
    }

/* ---- normal samples: NumPy's, drawn faster ---------------------------------------------------- */
/* The engine's input (and loss projection) rows are, block by block,
   Generator(SFC64(SeedSequence(seed, spawn_key=(stream, 0, block)))).standard_normal(...): NumPy's
   ziggurat, 8.5 ns a value on the machine of the benchmark, most of it in calls through the bit
   generator's function pointer and a branch on the sign that fails half the time, and 15 us a block
   to make the SeedSequence in Python. These functions draw the same numbers, bit for bit, in 2.5 ns
   and one call a block without the GIL: SeedSequence's hash (O'Neill's seed_seq_fe with NumPy's
   constants) and SFC64's seeding and step are written out here, and the ziggurat's fast path (98.5%
   of draws: a 64-bit word gives a layer i, a sign and a 52-bit rabs; x = +-rabs * w[i] when
   rabs < k[i]) uses tables read out of NumPy's own random_standard_normal by calling it with a bit
   generator that returns chosen words. Every other draw (the wedges and the tail) is NumPy's
   function itself, run on this state. kernels.py compares the result with NumPy's before using it. */
typedef struct bitgen {  /* numpy/random/bitgen.h */
    void *state;
    uint64_t (*next_uint64)(void *st);
    uint32_t (*next_uint32)(void *st);
    double (*next_double)(void *st);
    uint64_t (*next_raw)(void *st);
} bitgen_t;

typedef double (*normal_fn)(bitgen_t *);

typedef struct {
    uint64_t a, b, c, counter; /* SFC64's state, in the order of its Python state's array */
} sfc64;

static inline uint64_t sfc64_next(sfc64 *s) {
    uint64_t t = s->a + s->b + s->counter++;
    s->a = s->b ^ (s->b >> 11);
    s->b = s->c + (s->c << 3);
    s->c = ((s->c << 24) | (s->c >> 40)) + t;
    return t;
}

static uint64_t sfc64_word(void *s) { return sfc64_next(s); }
static uint32_t sfc64_half(void *s) { return (uint32_t)sfc64_next(s); } /* unused by the normal */
static double sfc64_double(void *s) { return (double)(sfc64_next(s) >> 11) * (1.0 / 9007199254740992.0); }

static normal_fn numpy_normal;
static uint64_t zig_k[256]; /* layer i's fast path: rabs < zig_k[i] (0: never) ... */
static double zig_w[256];   /* ... gives rabs * zig_w[i] */

/* The probe: its first word is the one asked about; later words (where the draw left the fast path)
   come from an SFC64 stream, so that the draw ends whatever NumPy's function does with them. */
typedef struct {
    uint64_t first;
    int64_t calls;
    sfc64 rest;
} probe;

static uint64_t probe_word(void *p) {
    probe *q = p;
    return q->calls++ ? sfc64_next(&q->rest) : q->first;
}
static uint32_t probe_half(void *p) { return (uint32_t)probe_word(p); }
static double probe_double(void *p) { return (double)(probe_word(p) >> 11) * (1.0 / 9007199254740992.0); }

/* Whether NumPy's draw from the word (rabs << 9 | i) (sign +) took one word: the fast path. */
static int fast(int i, uint64_t rabs, double *x) {
    probe q = {(rabs << 9) | (uint64_t)i, 0, {1, 2, 3, 1}};
    bitgen_t g = {&q, probe_word, probe_half, probe_double, probe_word};
    *x = numpy_normal(&g);
    return q.calls == 1;
}

/* Layer i's fast path takes the rabs below zig_k[i] (found by bisection) and gives rabs * zig_w[i]
   (the draw at rabs = 1 is zig_w[i] itself); returns the number of layers with a fast path. */
static int normal_init(normal_fn fn) {
    int layers = 0;
    numpy_normal = fn;
    for (int i = 0; i < 256; i++) {
        double x;
        uint64_t lo = 0, hi = (uint64_t)1 << 52; /* [0, lo) fast, hi not (or the end) */
        while (lo < hi) {
            uint64_t mid = lo + (hi - lo) / 2;
            if (fast(i, mid, &x))
                lo = mid + 1;
            else
                hi = mid;
        }
        zig_k[i] = lo > 1 && fast(i, 0, &x) && fast(i, 1, &x) ? lo : 0;
        zig_w[i] = zig_k[i] ? x : 0.0;
        layers += zig_k[i] > 0;
    }
    return layers;
}

/* n draws from the state, advanced as NumPy advances it, into out (float or double), or dropped
   (out NULL). The fast path steps SFC64 on local words whose address is never taken, so they stay
   in registers (a state whose address went to NumPy's function lived in memory: 2.8 ns a value
   against 2.5, slow paths included); the slow path hands NumPy's function a copy and takes its
   state back. */
static void normal_fill(sfc64 *state, int64_t n, int f32, void *out) {
    uint64_t a = state->a, b = state->b, c = state->c, counter = state->counter;
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = a + b + counter; /* sfc64_next, on the locals */
        uint64_t rabs = (r >> 9) & 0x000fffffffffffffULL;
        int layer = (int)(r & 0xff);
        double x;
        if (__builtin_expect(rabs < zig_k[layer], 1)) {
            x = from_bits(to_bits((double)(int64_t)rabs * zig_w[layer]) ^ (((r >> 8) & 1) << 63)); /* the
                sign by a bit: no branch to mispredict */
            a = b ^ (b >> 11);
            b = c + (c << 3);
            c = ((c << 24) | (c >> 40)) + r;
            counter++;
        } else {
            sfc64 held = {a, b, c, counter}; /* the state before the word: NumPy draws it again */
            bitgen_t g = {&held, sfc64_word, sfc64_half, sfc64_double, sfc64_word};
            x = numpy_normal(&g);
            a = held.a, b = held.b, c = held.c, counter = held.counter;
        }
        if (out && f32)
            ((float *)out)[i] = (float)x;
        else if (out)
            ((double *)out)[i] = x;
    }
    state->a = a, state->b = b, state->c = c, state->counter = counter;
}

/* SeedSequence(entropy) (the entropy and the spawn key as NumPy's uint32 words, run entropy first),
   its generate_state(3, uint64), and SFC64 seeded from that: SFC64's state as NumPy sets it. */
#define SEED_INIT_A 0x43b0d7e5u
#define SEED_MULT_A 0x931e8875u
#define SEED_INIT_B 0x8b51f9ddu
#define SEED_MULT_B 0x58f38dedu
#define SEED_MIX_L 0xca01f9ddu
#define SEED_MIX_R 0x4973f715u

static uint32_t seed_hash(uint32_t value, uint32_t *hash) {
    value ^= *hash;
    *hash *= SEED_MULT_A;
    value *= *hash;
    return value ^ (value >> 16);
}

static uint32_t seed_mix(uint32_t x, uint32_t y) {
    uint32_t r = SEED_MIX_L * x - SEED_MIX_R * y;
    return r ^ (r >> 16);
}

static sfc64 sfc64_seeded(const uint32_t *entropy, int64_t n) {
    uint32_t pool[4], hash = SEED_INIT_A, words[6];
    for (int i = 0; i < 4; i++) pool[i] = seed_hash(i < n ? entropy[i] : 0, &hash);
    for (int src = 0; src < 4; src++)
        for (int dst = 0; dst < 4; dst++)
            if (src != dst) pool[dst] = seed_mix(pool[dst], seed_hash(pool[src], &hash));
    for (int64_t src = 4; src < n; src++)
        for (int dst = 0; dst < 4; dst++) pool[dst] = seed_mix(pool[dst], seed_hash(entropy[src], &hash));
    hash = SEED_INIT_B;
    for (int i = 0; i < 6; i++) {
        uint32_t v = pool[i % 4] ^ hash;
        hash *= SEED_MULT_B;
        v *= hash;
        words[i] = v ^ (v >> 16);
    }
    sfc64 s = {words[0] | (uint64_t)words[1] << 32, words[2] | (uint64_t)words[3] << 32,
               words[4] | (uint64_t)words[5] << 32, 1};
    for (int i = 0; i < 12; i++) sfc64_next(&s);
    return s;
}

BACKWARD(double, tanh_back_d, TANH_SLOPE)
BACKWARD(float, tanh_back_f, TANH_SLOPE)
BACKWARD(double, sigmoid_back_d, SIGMOID_SLOPE)
BACKWARD(float, sigmoid_back_f, SIGMOID_SLOPE)
BACKWARD(double, relu_back_d, RELU_SLOPE)
BACKWARD(float, relu_back_f, RELU_SLOPE)

UNARY(double, tanh_d)
UNARY(float, tanh_f)
UNARY(double, sigmoid_d)
UNARY(float, sigmoid_f)
UNARY(double, relu_d)
UNARY(float, relu_f)

SCAN(double)
SCAN(float)
BINS(double)
BINS(float)
HIST(double)
HIST(float)

/* ---- a layer's pass after its pre scan ------------------------------------------------------ */
/* post = phi(pre) written out, and both histograms counted at once: each value's pre bin and post
   bin make one slot, pre_bin * post->slots + post_bin, of a pre->slots x post->slots table: one
   count a value instead of two, and the pre read once instead of three times (its histogram, phi,
   and the post's histogram), a block at a time. The pre's counts are the table's row sums and the
   post's its column sums. */
#define LAYER(T, PHI)                                                                            \
    HOT static int64_t layer_##PHI(const T *z, T *a, int64_t n, const Grid *pre, const Grid *post, \
                                   int64_t *pre_counts, int64_t *post_counts) {                   \
        Counter c;                                                                                \
        int32_t ip[BLOCK], iq[BLOCK], joint[BLOCK];                                               \
        int32_t width = (int32_t)post->slots;                                                     \
        if (counter_open_table(&c, pre->slots, post->slots, pre_counts, post_counts)) return -1; \
        for (int64_t b0 = 0; b0 < n; b0 += BLOCK) {                                               \
            int64_t m = n - b0 < BLOCK ? n - b0 : BLOCK;                                          \
            const T *zb = z + b0;                                                                 \
            T *ab = a + b0;                                                                       \
            PHI##_block(zb, ab, m);                                                               \
            bins_##T(pre, zb, m, ip);                                                             \
            bins_##T(post, ab, m, iq);                                                            \
            _Pragma("omp simd")                                                                  \
            for (int64_t i = 0; i < m; i++) joint[i] = ip[i] * width + iq[i];                     \
            count_block(&c, joint, m);                                                            \
        }                                                                                         \
        counter_close(&c);                                                                        \
        return 0;                                                                                 \
    }

LAYER(double, tanh_d)
LAYER(float, tanh_f)
LAYER(double, sigmoid_d)
LAYER(float, sigmoid_f)
LAYER(double, relu_d)
LAYER(float, relu_f)

/* ---- entry points: one per function, dtype chosen by a flag (0 float64, 1 float32) ----------- */
#define EXPORT __attribute__((visibility("default")))

/* res (10 doubles): min, max, sum, sum of squares, the clear rows' spread (units), and as whole
   numbers: non-finite, zero, above sat_high, below sat_low, clear rows (-1 when not asked: units 0,
   or a non-finite value). row_sq (2 rows doubles): each row's sum, then each row's sum of squares. */
EXPORT void actstats_scan(int f32, const void *x, int64_t rows, int64_t cols, double sat_low,
                          double sat_high, int units, double sym_tol, double cancel, double *row_sq,
                          double *res) {
    if (f32)
        scan_float(x, rows, cols, sat_low, sat_high, row_sq, row_sq + rows, res);
    else
        scan_double(x, rows, cols, sat_low, sat_high, row_sq, row_sq + rows, res);
    res[4] = 0.0;
    int64_t clear = -1;
    if (units && res[5] == 0.0 && rows > 0)
        clear = units_spread(row_sq, row_sq + rows, rows, cols, res[2], res[3], sym_tol, cancel, res + 4);
    res[9] = (double)clear;
}

/* returns the number of values outside the grid (-1: no memory) */
EXPORT int64_t actstats_hist_adaptive(int f32, const void *x, int64_t n, double scale, double start,
                                      int64_t bins, int64_t *counts) {
    Grid g = grid_adaptive(f32, scale, start, bins);
    int64_t r = f32 ? hist_float(x, n, &g, counts) : hist_double(x, n, &g, counts);
    return r ? r : counts[bins];
}

EXPORT int64_t actstats_hist_fixed(int f32, const void *x, int64_t n, double lo, double hi, double scale,
                                   double shift, int has_shift, int64_t bins, int64_t *counts) {
    Grid g = grid_fixed(f32, lo, hi, scale, shift, has_shift, bins);
    return f32 ? hist_float(x, n, &g, counts) : hist_double(x, n, &g, counts);
}

EXPORT void actstats_tanh(int f32, const void *z, void *out, int64_t n) {
    if (f32)
        tanh_f_loop(z, out, n);
    else
        tanh_d_loop(z, out, n);
}

EXPORT void actstats_sigmoid(int f32, const void *z, void *out, int64_t n) {
    if (f32)
        sigmoid_f_loop(z, out, n);
    else
        sigmoid_d_loop(z, out, n);
}

EXPORT void actstats_relu(int f32, const void *z, void *out, int64_t n) {
    if (f32)
        relu_f_loop(z, out, n);
    else
        relu_d_loop(z, out, n);
}

/* kind: 0 tanh, 1 sigmoid, 2 relu */
EXPORT double actstats_backward(int f32, int kind, const void *d, const void *a, void *gp, int64_t n) {
    if (f32)
        return kind == 0 ? tanh_back_f(d, a, gp, n) : kind == 1 ? sigmoid_back_f(d, a, gp, n) : relu_back_f(d, a, gp, n);
    return kind == 0 ? tanh_back_d(d, a, gp, n) : kind == 1 ? sigmoid_back_d(d, a, gp, n) : relu_back_d(d, a, gp, n);
}

/* kind: 0 tanh, 1 sigmoid, 2 relu; the pre's grid adaptive, the post's fixed (post_fixed 1: lo, hi,
   scale, shift, has_shift) or adaptive (scale, start); pre_counts: pre_bins + 1 int64 (the last:
   outside the grid), post_counts: post_bins + 2 (fixed: below lo, above hi) or + 1 (adaptive:
   outside), zeroed by the caller. Returns -1 when out of memory. */
EXPORT int64_t actstats_layer(int f32, int kind, const void *z, void *a, int64_t n, double pre_scale,
                              double pre_start, int64_t pre_bins, int post_fixed, double post_lo,
                              double post_hi, double post_scale, double post_shift, int post_has_shift,
                              double post_start, int64_t post_bins, int64_t *pre_counts,
                              int64_t *post_counts) {
    Grid pre = grid_adaptive(f32, pre_scale, pre_start, pre_bins);
    Grid post = post_fixed ? grid_fixed(f32, post_lo, post_hi, post_scale, post_shift, post_has_shift, post_bins)
                           : grid_adaptive(f32, post_scale, post_start, post_bins);
    if (f32)
        return kind == 0 ? layer_tanh_f(z, a, n, &pre, &post, pre_counts, post_counts)
             : kind == 1 ? layer_sigmoid_f(z, a, n, &pre, &post, pre_counts, post_counts)
                         : layer_relu_f(z, a, n, &pre, &post, pre_counts, post_counts);
    return kind == 0 ? layer_tanh_d(z, a, n, &pre, &post, pre_counts, post_counts)
         : kind == 1 ? layer_sigmoid_d(z, a, n, &pre, &post, pre_counts, post_counts)
                     : layer_relu_d(z, a, n, &pre, &post, pre_counts, post_counts);
}

EXPORT int64_t actstats_alive(int f32, const void *x, int64_t rows, int64_t cols, uint8_t *alive) {
    return f32 ? alive_float(x, rows, cols, alive) : alive_double(x, rows, cols, alive);
}

/* numpy_standard_normal: the address of NumPy's random_standard_normal(bitgen_t *). Returns the
   number of ziggurat layers with a fast path (0: nothing to gain, or not a ziggurat). */
EXPORT int actstats_normal_init(void *numpy_standard_normal) {
    return normal_init((normal_fn)numpy_standard_normal);
}

/* The draws skip .. skip + n - 1 of Generator(SFC64(SeedSequence(entropy))).standard_normal into out
   (float32 when f32, else float64); entropy as SeedSequence assembles it (uint32 words). After
   actstats_normal_init only. */
EXPORT void actstats_normal_rows(const uint32_t *entropy, int64_t n_entropy, int64_t skip, int64_t n,
                                 int f32, void *out) {
    sfc64 s = sfc64_seeded(entropy, n_entropy);
    normal_fill(&s, skip, f32, NULL);
    normal_fill(&s, n, f32, out);
}

/* An importable (empty) module, so that setuptools builds it as an extension and kernels.py finds
   its file through the import system. */
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
