/* fp32 FMA peak of this CPU: each thread runs 12 independent FMA chains (enough to hide the
 * FMA latency on two FMA pipes) for a fixed number of iterations, with 256-bit (AVX2) or
 * 512-bit (AVX-512) vectors.
 * Build: gcc -O3 -mavx2 -mfma -fopenmp peak_fma.c -o peak_fma            (AVX2)
 *        gcc -O3 -mavx512f -DWIDTH512 -fopenmp peak_fma.c -o peak_fma512  (AVX-512)
 * Run: ./peak_fma THREADS; prints GFLOP/s (lanes x 2 FLOP per FMA). */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef WIDTH512
typedef __m512 vec;
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMADD _mm512_fmadd_ps
#define STORE _mm512_storeu_ps
#else
typedef __m256 vec;
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMADD _mm256_fmadd_ps
#define STORE _mm256_storeu_ps
#endif

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    long iters = argc > 2 ? atol(argv[2]) : 200000000L;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        float sink = 0;
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
            vec a[12];
            vec x = SET1(0.999999f), y = SET1(1e-7f);
            for (int k = 0; k < 12; k++) a[k] = SET1((float)(k + omp_get_thread_num()));
            for (long i = 0; i < iters / 12; i++) {
#pragma GCC unroll 12
                for (int k = 0; k < 12; k++) a[k] = FMADD(a[k], x, y);
            }
            for (int k = 0; k < 12; k++) {
                float v[LANES];
                STORE(v, a[k]);
                sink += v[0];
            }
        }
        double dt = omp_get_wtime() - t0;
        double gflops = (double)threads * (iters / 12) * 12 * LANES * 2 / dt / 1e9;
        if (gflops > best) best = gflops;
        if (sink == 12345.678f) printf("#");
    }
    printf("%.2f\n", best);
    return 0;
}
