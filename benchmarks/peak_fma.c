/* fp32 FMA peak of this CPU: each thread runs 12 independent AVX2 FMA chains (enough to
 * hide the FMA latency on two FMA pipes) for a fixed number of iterations.
 * Build: gcc -O3 -mavx2 -mfma -fopenmp peak_fma.c -o peak_fma; run: ./peak_fma THREADS
 * Prints GFLOP/s (8 lanes x 2 FLOP per FMA). */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    long iters = argc > 2 ? atol(argv[2]) : 200000000L;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        float sink = 0;
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
            __m256 a[12];
            __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
            for (int k = 0; k < 12; k++) a[k] = _mm256_set1_ps((float)(k + omp_get_thread_num()));
            for (long i = 0; i < iters / 12; i++) {
#pragma GCC unroll 12
                for (int k = 0; k < 12; k++) a[k] = _mm256_fmadd_ps(a[k], x, y);
            }
            for (int k = 0; k < 12; k++) {
                float v[8];
                _mm256_storeu_ps(v, a[k]);
                sink += v[0];
            }
        }
        double dt = omp_get_wtime() - t0;
        double gflops = (double)threads * (iters / 12) * 12 * 8 * 2 / dt / 1e9;
        if (gflops > best) best = gflops;
        if (sink == 12345.678f) printf("#");
    }
    printf("%.2f\n", best);
    return 0;
}
