/* Post-processing's two passes over the stored masks (SPEC §10 steps 1 and 4), each fused into one
 * walk over a block of rows: rewrite the values, then find each row's first largest value and its
 * column. The arithmetic is the reference's (engine/postprocess.py, StoredMasks) element by
 * element: a compare and a select; a multiply, a max with the zero stand-in and a correctly
 * rounded sqrt (IEEE sqrtf, vectorized without errno); the row maximum is exact in any order. So
 * the results are the same bits.
 */
#include <math.h>
#include <string.h>

#include "lanes.h"

/* A row's first largest value and its column: the maximum by lanes (max is exact in any order),
 * then the first column holding it. */
static inline void first_max(const float *row, int64_t count, float *best, int64_t *which) {
  float top = row[0];
  int64_t i = 0;
  if (count >= LANES) {
    vec lanes;
    memcpy(&lanes, row, sizeof lanes);
    for (i = LANES; i + LANES <= count; i += LANES) {
      vec next;
      memcpy(&next, row + i, sizeof next);
      lanes = blend(next > lanes, next, lanes);
    }
    for (int j = 0; j < LANES; ++j) top = lanes[j] > top ? lanes[j] : top;
  }
  for (; i < count; ++i) top = row[i] > top ? row[i] : top;
  int64_t at = 0;
  while (at + 1 < count && row[at] != top) ++at;
  *best = top;
  *which = at;
}

/* values (rows, count) <- value where value >= thresholds[i] else 0 (step 1, M'). */
void threshold_rows(float *values, int64_t rows, int64_t count, const float *thresholds, float *best,
                    int64_t *which) {
  for (int64_t n = 0; n < rows; ++n) {
    float *row = values + n * count;
    for (int64_t i = 0; i < count; ++i) row[i] = row[i] >= thresholds[i] ? row[i] : 0.0f;
    first_max(row, count, best + n, which + n);
  }
}

/* values (rows, count) <- sqrt(max(value * cover[i], zero_standin)) (step 4, M''). */
void rescale_rows(float *values, int64_t rows, int64_t count, const float *cover, float zero_standin, float *best,
                  int64_t *which) {
  for (int64_t n = 0; n < rows; ++n) {
    float *row = values + n * count;
    for (int64_t i = 0; i < count; ++i) {
      const float scaled = row[i] * cover[i];
      row[i] = sqrtf(scaled < zero_standin ? zero_standin : scaled);
    }
    first_max(row, count, best + n, which + n);
  }
}
