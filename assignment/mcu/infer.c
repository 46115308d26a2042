/* Plain C99 inference of a binary TinyNet: see mcu/infer.h and mcu/export.py.
 * Build with -DMCU_MODEL='"path/to/mcu_model.h"' (default "mcu_model.h" on the include path). */
#include <string.h>
#include "infer.h"
#ifndef MCU_MODEL
#define MCU_MODEL "mcu_model.h"
#endif
#include MCU_MODEL

#ifdef __AVR__
#define READ_BYTE(p) pgm_read_byte(p)
#define READ_INT32(p) ((int32_t)pgm_read_dword(p))
#define READ_LAYER(dst, src) memcpy_P((dst), (src), sizeof(mcu_layer))
#else
#define READ_BYTE(p) (*(p))
#define READ_INT32(p) (*(p))
#define READ_LAYER(dst, src) memcpy((dst), (src), sizeof(mcu_layer))
#endif

/* One buffer for every activation: a layer reads one end and writes the other, then they swap. */
static int8_t arena[MCU_ARENA_BYTES];

int8_t *mcu_input(void) { return arena; }

/* The integer affine map, ReLU and clip of one conv output (the rounding half is inside b). */
static int8_t requantize(int32_t acc, int32_t m, int32_t b, uint8_t shift) {
    int32_t v = acc * m + b;
    if (v <= 0) return 0;
    v >>= shift;
    return (int8_t)(v > 127 ? 127 : v);
}

/* acc of output position (y, x) of one channel whose packed signs start at w. The signs are read one
 * byte at a time and tested with a moving mask (AVR has no barrel shifter); each input channel's nine
 * terms add up in int16 (at most 9 * 128), the channels in int32. */
static int32_t conv_at(const mcu_layer *L, const int8_t *in, const uint8_t *w, int16_t y, int16_t x) {
    int32_t acc = 0;
    uint8_t bits = 0, mask = 0;
    uint16_t plane = (uint16_t)L->in_h * L->in_w;
    for (uint8_t c = 0; c < L->in_c; c++, in += plane) {
        int16_t part = 0;
        for (int8_t ky = -1; ky <= 1; ky++) {
            int16_t iy = y + ky;
            uint8_t row_inside = iy >= 0 && iy < L->in_h;
            const int8_t *row = row_inside ? in + iy * L->in_w : in;
            for (int8_t kx = -1; kx <= 1; kx++) {
                if (!mask) {
                    bits = READ_BYTE(w++);
                    mask = 1;
                }
                int16_t ix = x + kx;
                if (row_inside && ix >= 0 && ix < L->in_w) part += (bits & mask) ? row[ix] : -row[ix];
                mask <<= 1;
            }
        }
        acc += part;
    }
    return acc;
}

static void conv_pool(const mcu_layer *L, const int8_t *in, int8_t *out) {
    uint8_t oh = L->in_h / 2, ow = L->in_w / 2;
    for (uint8_t o = 0; o < L->out_c; o++) {
        const uint8_t *w = L->w + (uint16_t)o * L->row_bytes;
        int32_t m = READ_INT32(L->m + o), b = READ_INT32(L->b + o);
        for (uint8_t py = 0; py < oh; py++) {
            for (uint8_t px = 0; px < ow; px++) {
                int8_t best = 0;
                for (uint8_t d = 0; d < 4; d++) {
                    int8_t q = requantize(conv_at(L, in, w, 2 * py + (d >> 1), 2 * px + (d & 1)), m, b, L->shift);
                    if (q > best) best = q;
                }
                out[((uint16_t)o * oh + py) * ow + px] = best;
            }
        }
    }
}

static void linear(const mcu_layer *L, const int8_t *in, int32_t *logits) {
    for (uint8_t o = 0; o < L->out_c; o++) {
        const uint8_t *w = L->w + (uint16_t)o * L->row_bytes;
        int32_t acc = 0;
        uint8_t bits = 0, mask = 0;
        for (uint16_t i = 0; i < L->fan_in; i++) {
            if (!mask) {
                bits = READ_BYTE(w++);
                mask = 1;
            }
            acc += (bits & mask) ? in[i] : -in[i];
            mask <<= 1;
        }
        logits[o] = acc * READ_INT32(L->m + o) + READ_INT32(L->b + o);
    }
}

uint8_t mcu_predict(int32_t *logits) {
    mcu_layer L;
    uint16_t in_at = 0;
    for (uint8_t k = 0; k < MCU_LAYER_COUNT; k++) {
        READ_LAYER(&L, &mcu_layers[k]);
        if (!L.conv) {
            linear(&L, arena + in_at, logits);
            break;
        }
        uint16_t out_bytes = (uint16_t)L.out_c * (L.in_h / 2) * (L.in_w / 2);
        uint16_t out_at = in_at == 0 ? MCU_ARENA_BYTES - out_bytes : 0;
        conv_pool(&L, arena + in_at, arena + out_at);
        in_at = out_at;
    }
    uint8_t best = 0;
    for (uint8_t o = 1; o < MCU_CLASSES; o++)
        if (logits[o] > logits[best]) best = o;
    return best;
}
