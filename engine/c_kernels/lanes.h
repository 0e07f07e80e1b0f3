/* The vector type of the C kernels: LANES float32 lanes, as wide as this CPU's registers
 * (GCC/Clang vector extensions; the build compiles for the machine it runs on). */
#ifndef DKNET_LANES_H
#define DKNET_LANES_H
#include <stdint.h>

#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4
#endif

typedef float vec __attribute__((vector_size(LANES * 4)));
typedef int32_t ivec __attribute__((vector_size(LANES * 4)));

/* Lane by lane: when_true where the mask (a comparison's result) is set, else when_false. */
static inline vec blend(ivec mask, vec when_true, vec when_false) {
  return (vec)(((ivec)when_true & mask) | ((ivec)when_false & ~mask));
}

#endif
