/* ATmega328P firmware for measuring mcu/infer.c in simavr.
 *
 * With -DMCU_SIM: copies the test image of mcu_image.h (PROGMEM) into the input, counts the CPU cycles of
 * one mcu_predict() with Timer1 (no prescaler, overflows counted in an interrupt), measures the stack
 * it used (RAM painted with 0xC5 beforehand), prints "cycles=N class=C stack=S" on the UART, and halts
 * (cli; sleep, which ends simavr). Without it: the deployable skeleton whose avr-size is reported (reads
 * the image from the UART, writes the class to PORTB), with no test image and no printing. */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>
#include "infer.h"
#define MCU_SIZES_ONLY
#include MCU_MODEL

#ifdef MCU_SIM
#include <stdio.h>
#include "mcu_image.h"

static volatile uint16_t overflows;
ISR(TIMER1_OVF_vect) { overflows++; }

static int uart_put(char c, FILE *stream) {
    (void)stream;
    while (!(UCSR0A & _BV(UDRE0))) {}
    UDR0 = c;
    return 0;
}
static FILE uart = FDEV_SETUP_STREAM(uart_put, NULL, _FDEV_SETUP_WRITE);

extern uint8_t __heap_start;
#define PAINT 0xC5

int main(void) {
    uint8_t *p;
    for (p = &__heap_start; p < (uint8_t *)SP - 16; p++) *p = PAINT;
    int8_t *in = mcu_input();
    for (uint16_t i = 0; i < MCU_INPUT_BYTES; i++) in[i] = (int8_t)(pgm_read_byte(&mcu_image[i]) - 128);
    int32_t logits[MCU_CLASSES];
    UCSR0B = _BV(TXEN0);
    TCCR1A = 0;
    TIMSK1 = _BV(TOIE1);
    TCNT1 = 0;
    sei();
    TCCR1B = _BV(CS10);
    uint8_t cls = mcu_predict(logits);
    TCCR1B = 0;
    cli();
    uint32_t cycles = ((uint32_t)overflows << 16) + TCNT1;
    for (p = &__heap_start; *p == PAINT; p++) {}
    stdout = &uart;
    printf("cycles=%lu class=%u stack=%u\n", (unsigned long)cycles, cls, (unsigned)(RAMEND + 1 - (uint16_t)p));
    while (!(UCSR0A & _BV(TXC0))) {}
    sleep_enable();
    sleep_cpu();
    return 0;
}
#else
static uint8_t uart_read(void) {
    while (!(UCSR0A & _BV(RXC0))) {}
    return UDR0;
}

int main(void) {
    int32_t logits[MCU_CLASSES];
    UCSR0B = _BV(RXEN0);
    DDRB = 0xFF;
    for (;;) {
        int8_t *in = mcu_input();
        for (uint16_t i = 0; i < MCU_INPUT_BYTES; i++) in[i] = (int8_t)(uart_read() - 128);
        PORTB = mcu_predict(logits);
    }
}
#endif
