/* Decoding's dynamic convolution on CPU (SPEC §8), fused: the hidden activations stay in registers.
 *
 * For point n (inputs x_n = [f_n, p_n], 19 channels) and instance i:
 *     logit[n, i] = b2_i + sum_k w2_ik * relu(bias_ik + sum_c weight_ikc * x_nc)
 * with the instance's centre already folded into bias (engine/decoding.py). One vector holds LANES
 * points; their 19 inputs stay in registers while every instance's weights stream past as scalars
 * broadcast from memory, eight hidden units at a time (eight independent FMA chains). The sum over
 * c runs in channel order and the sum over k in unit order, in float32.
 */
#include <string.h>

#include "lanes.h"

#define CHANNELS 19
#define HIDDEN 16
#define UNITS_AT_ONCE 8

typedef float vec __attribute__((vector_size(LANES * 4)));
typedef int32_t ivec __attribute__((vector_size(LANES * 4)));

static inline vec relu(vec h) { return blend(h > 0, h, (vec){0}); }

/* logits (rows [start, stop) of an (N, count) float32 matrix) from inputs_t (19, N) channel-major,
 * weight (count, 16, 19), bias (count, 16), w2 (count, 16), b2 (count). */
void decode_logits(const float *inputs_t, int64_t num_points, const float *weight, const float *bias,
                   const float *w2, const float *b2, int64_t count, float *logits, int64_t start, int64_t stop) {
  for (int64_t first = start; first < stop; first += LANES) {
    const int64_t lanes = stop - first < LANES ? stop - first : LANES;
    vec x[CHANNELS];
    for (int c = 0; c < CHANNELS; ++c) {
      x[c] = (vec){0};
      memcpy(&x[c], inputs_t + c * num_points + first, (size_t)lanes * 4);
    }
    for (int64_t i = 0; i < count; ++i) {
      const float *w = weight + i * HIDDEN * CHANNELS;
      vec acc = (vec){0} + b2[i];
      for (int unit0 = 0; unit0 < HIDDEN; unit0 += UNITS_AT_ONCE) {
        vec h[UNITS_AT_ONCE];
        for (int u = 0; u < UNITS_AT_ONCE; ++u) h[u] = (vec){0} + bias[i * HIDDEN + unit0 + u];
#pragma GCC unroll 19
        for (int c = 0; c < CHANNELS; ++c)
#pragma GCC unroll 8
          for (int u = 0; u < UNITS_AT_ONCE; ++u) h[u] += w[(unit0 + u) * CHANNELS + c] * x[c];
        for (int u = 0; u < UNITS_AT_ONCE; ++u) acc += w2[i * HIDDEN + unit0 + u] * relu(h[u]);
      }
      for (int64_t j = 0; j < lanes; ++j) logits[(first + j) * count + i] = acc[j];
    }
  }
}

/* counts[i * levels + l] += the number of rows of masks (rows, count) float32 with
 * min(trunc(m * levels), levels - 1) == l in column i; NaN and negative values count as level 0.
 * A row's levels are computed first (a vector loop), then counted. */
void count_levels(const float *masks, int64_t rows, int64_t count, int64_t levels, int64_t *counts) {
  const float scale = (float)levels, top = (float)(levels - 1);
  int32_t slots[256];
  for (int64_t i0 = 0; i0 < count; i0 += 256) {
    const int64_t width = count - i0 < 256 ? count - i0 : 256;
    for (int64_t n = 0; n < rows; ++n) {
      const float *row = masks + n * count + i0;
      for (int64_t i = 0; i < width; ++i) {
        float scaled = row[i] * scale;
        scaled = scaled > 0 ? scaled : 0;  /* also NaN -> 0 */
        scaled = scaled < top ? scaled : top;
        slots[i] = (int32_t)((i0 + i) * levels) + (int32_t)scaled;
      }
      for (int64_t i = 0; i < width; ++i) counts[slots[i]] += 1;
    }
  }
}
