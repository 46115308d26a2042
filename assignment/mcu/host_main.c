/* Host check of mcu/infer.c: reads images (MCU_INPUT_BYTES uint8 pixels each, channels first) from stdin,
 * prints one line per image: the predicted class, then the logits. */
#include <stdio.h>
#include "infer.h"
#define MCU_SIZES_ONLY
#include MCU_MODEL

int main(void) {
    unsigned char pixels[MCU_INPUT_BYTES];
    int32_t logits[MCU_CLASSES];
    while (fread(pixels, 1, MCU_INPUT_BYTES, stdin) == MCU_INPUT_BYTES) {
        int8_t *in = mcu_input();
        for (int i = 0; i < MCU_INPUT_BYTES; i++) in[i] = (int8_t)(pixels[i] - 128);
        printf("%d", mcu_predict(logits));
        for (int o = 0; o < MCU_CLASSES; o++) printf(" %ld", (long)logits[o]);
        printf("\n");
    }
    return 0;
}
