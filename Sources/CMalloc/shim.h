// glibc's allocator tuning (mallopt); part of libc, nothing to link. Empty where there is no <malloc.h>.
#if __has_include(<malloc.h>)
#include <malloc.h>
#endif
