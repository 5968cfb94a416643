/*
 * gpioev: waits for edge events on one GPIO line through the GPIO character
 * device (uAPI v2), as a guest-side consumer of the line's interrupt.
 * Built statically on the host by e2e/build-guest.sh.
 *
 *   gpioev /dev/gpiochipN LINE COUNT TIMEOUT_S
 *
 * Requests LINE as an input with both edges (the driver enables the
 * interrupt), prints "ready", then one line per event:
 * "event N rising|falling value=V", and exits 0 after COUNT events,
 * 1 on timeout or error.
 */
#include <fcntl.h>
#include <linux/gpio.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: gpioev /dev/gpiochipN LINE COUNT TIMEOUT_S\n");
        return 2;
    }
    int chip = open(argv[1], O_RDONLY);
    if (chip < 0) { perror(argv[1]); return 1; }
    struct gpio_v2_line_request req;
    memset(&req, 0, sizeof req);
    req.offsets[0] = (unsigned)atoi(argv[2]);
    req.num_lines = 1;
    req.config.flags = GPIO_V2_LINE_FLAG_INPUT | GPIO_V2_LINE_FLAG_EDGE_RISING | GPIO_V2_LINE_FLAG_EDGE_FALLING;
    strcpy(req.consumer, "muser-e2e");
    if (ioctl(chip, GPIO_V2_GET_LINE_IOCTL, &req) < 0) { perror("GPIO_V2_GET_LINE_IOCTL"); return 1; }
    printf("ready\n");
    fflush(stdout);
    int want = atoi(argv[3]), timeout_ms = atoi(argv[4]) * 1000;
    for (int n = 1; n <= want; n++) {
        struct pollfd p = { .fd = req.fd, .events = POLLIN };
        int r = poll(&p, 1, timeout_ms);
        if (r <= 0) { printf("timeout waiting for event %d\n", n); return 1; }
        struct gpio_v2_line_event ev;
        if (read(req.fd, &ev, sizeof ev) != (ssize_t)sizeof ev) { perror("read"); return 1; }
        struct gpio_v2_line_values vals = { .bits = 0, .mask = 1 };
        int v = ioctl(req.fd, GPIO_V2_LINE_GET_VALUES_IOCTL, &vals) < 0 ? -1 : (int)(vals.bits & 1);
        printf("event %d %s value=%d\n", n, ev.id == GPIO_V2_LINE_EVENT_RISING_EDGE ? "rising" : "falling", v);
        fflush(stdout);
    }
    return 0;
}
