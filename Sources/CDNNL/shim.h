#include <oneapi/dnnl/dnnl.h>

// oneDNN's Debian build runs its kernels on OpenMP (libgomp); the trainer gives it as many threads as its own
// kernels use. (omp.h lies outside clang's include path, so the one function is declared here.)
void omp_set_num_threads(int);
