/* Plain C99 inference of a binary TinyNet exported by mcu/export.py (see there for the arithmetic).
 *
 * Usage: fill mcu_input() with MCU_INPUT_BYTES int8 values (pixel - 128, channels first), then call
 * mcu_predict(logits). On AVR the weights live in flash (PROGMEM) and are read with pgm_read_*. */
#ifndef MCU_INFER_H
#define MCU_INFER_H
#include <stdint.h>

#ifdef __AVR__
#include <avr/pgmspace.h>
#define MCU_FLASH PROGMEM
#else
#define MCU_FLASH
#endif

typedef struct {
    uint8_t conv;                 /* 1: 3x3 conv (padding 1), ReLU, 2x2 max-pool; 0: linear, int32 logits */
    uint8_t in_c, in_h, in_w;     /* input shape, channels first (1, 1 for the linear layer) */
    uint8_t out_c;
    uint16_t fan_in;              /* weights of one output channel */
    uint8_t row_bytes;            /* packed bytes of one output channel: ceil(fan_in / 8) */
    uint8_t shift;
    const uint8_t *w;             /* signs, bit i % 8 of byte i / 8 of a row, 1 = +1 */
    const int32_t *m, *b;         /* per output channel: fixed-point multiplier and bias */
} mcu_layer;

int8_t *mcu_input(void);
/* Runs the network on mcu_input(); writes the logits and returns the first largest one's class. */
uint8_t mcu_predict(int32_t *logits);

#endif
