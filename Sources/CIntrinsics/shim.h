// The compiler's own x86 intrinsics and CPUID headers (clang's resource directory); nothing on other
// architectures, where AgoraDigest uses its portable path.
#if defined(__x86_64__)
#include <immintrin.h>
#include <cpuid.h>
#endif
