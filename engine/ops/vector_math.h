// Vector versions of the math functions that the CPU kernels' loops call.
//
// glibc's libmvec computes exp, log, erf, log1p, tanh, ... on 4, 8 or 16
// floats at once (SSE, AVX2, AVX-512), and GCC calls it from a loop marked
// `#pragma omp simd` once the scalar function is declared `omp declare simd`.
// glibc's <math.h> makes those declarations only under -ffast-math, which
// would also let the compiler reorder every sum and assume that no NaN or
// infinity exists; so this header makes them itself, for the functions the
// kernels use, where the Makefile found libmvec (ENGINE_LIBMVEC). Elsewhere
// the same loops call the scalar functions.
//
// The vector functions are a few ulps from exact, as the scalar ones, but
// not always equal to them, and a loop's remainder runs the scalar ones: the
// same input can round differently, by an ulp or so, at another position in
// a tensor. For one shape and thread count the results are the same from run
// to run. (Elementwise.Float32FunctionsMatchDoubleToAFewUlps holds the
// elementwise formulas to 8 float32 ulps of double on every path.)
#pragma once
#include <cmath>

#if defined(ENGINE_LIBMVEC) && defined(__x86_64__) && defined(__GLIBC__)
extern "C" {
#pragma omp declare simd notinbranch
float expf(float) noexcept;
#pragma omp declare simd notinbranch
double exp(double) noexcept;
#pragma omp declare simd notinbranch
float powf(float, float) noexcept;
#pragma omp declare simd notinbranch
double pow(double, double) noexcept;
#pragma omp declare simd notinbranch
float logf(float) noexcept;
#pragma omp declare simd notinbranch
double log(double) noexcept;
#if __GLIBC_PREREQ(2, 35)  // libmvec's erf, expm1, log1p and tanh
#pragma omp declare simd notinbranch
float erff(float) noexcept;
#pragma omp declare simd notinbranch
double erf(double) noexcept;
#pragma omp declare simd notinbranch
float expm1f(float) noexcept;
#pragma omp declare simd notinbranch
double expm1(double) noexcept;
#pragma omp declare simd notinbranch
float log1pf(float) noexcept;
#pragma omp declare simd notinbranch
double log1p(double) noexcept;
#pragma omp declare simd notinbranch
float tanhf(float) noexcept;
#pragma omp declare simd notinbranch
double tanh(double) noexcept;
#endif
}
#endif
