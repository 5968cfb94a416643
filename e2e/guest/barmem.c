/*
 * barmem: read and write a PCI memory BAR from inside the e2e guest through
 * its sysfs resource file (/sys/bus/pci/devices/BDF/resourceN), which only
 * supports mmap. Built statically on the host by e2e/build-guest.sh.
 *
 *   barmem FILE read OFF LEN          print LEN bytes at OFF as hex
 *   barmem FILE write OFF HEX         write the bytes of HEX at OFF
 *   barmem FILE fill SEED             byte i = (i * 31 + SEED) & 0xff, whole BAR
 *   barmem FILE check SEED            verify what fill wrote; exit 1 on mismatch
 *   barmem FILE flood OFF COUNT START COUNT 32-bit stores at OFF: START, START+1, ...
 *
 * Accesses are 32-bit where offset and length allow, else 8-bit.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile uint8_t *bar;
static size_t bar_size;

static void put8(size_t off, uint8_t v) { bar[off] = v; }
static uint8_t get8(size_t off) { return bar[off]; }

static void write_bytes(size_t off, const uint8_t *src, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (((off + i) & 3) == 0 && n - i >= 4) {
            uint32_t w;
            memcpy(&w, src + i, 4);
            *(volatile uint32_t *)(bar + off + i) = w;
            i += 4;
        } else {
            put8(off + i, src[i]);
            i++;
        }
    }
}

static void read_bytes(size_t off, uint8_t *dst, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (((off + i) & 3) == 0 && n - i >= 4) {
            uint32_t w = *(volatile uint32_t *)(bar + off + i);
            memcpy(dst + i, &w, 4);
            i += 4;
        } else {
            dst[i] = get8(off + i);
            i++;
        }
    }
}

static int usage(void) {
    fprintf(stderr, "usage: barmem FILE read OFF LEN | write OFF HEX | fill SEED | check SEED | flood OFF COUNT START\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 4) return usage();
    int fd = open(argv[1], O_RDWR | O_SYNC);
    if (fd < 0) { perror(argv[1]); return 1; }
    struct stat st;
    if (fstat(fd, &st) < 0) { perror("fstat"); return 1; }
    bar_size = (size_t)st.st_size;
    void *p = mmap(NULL, bar_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    bar = p;
    const char *op = argv[2];
    if (!strcmp(op, "read") && argc == 5) {
        size_t off = strtoul(argv[3], NULL, 0), n = strtoul(argv[4], NULL, 0);
        if (off > bar_size || n > bar_size - off) return usage();
        uint8_t *buf = malloc(n ? n : 1);
        read_bytes(off, buf, n);
        for (size_t i = 0; i < n; i++) printf("%02x", buf[i]);
        printf("\n");
        return 0;
    }
    if (!strcmp(op, "write") && argc == 5) {
        size_t off = strtoul(argv[3], NULL, 0), n = strlen(argv[4]) / 2;
        if (off > bar_size || n > bar_size - off) return usage();
        uint8_t *buf = malloc(n ? n : 1);
        for (size_t i = 0; i < n; i++) {
            char h[3] = { argv[4][2 * i], argv[4][2 * i + 1], 0 };
            buf[i] = (uint8_t)strtoul(h, NULL, 16);
        }
        write_bytes(off, buf, n);
        return 0;
    }
    if ((!strcmp(op, "fill") || !strcmp(op, "check")) && argc == 4) {
        unsigned seed = strtoul(argv[3], NULL, 0);
        uint8_t *buf = malloc(bar_size), *got = malloc(bar_size);
        for (size_t i = 0; i < bar_size; i++) buf[i] = (uint8_t)(i * 31 + seed);
        if (op[0] == 'f') { write_bytes(0, buf, bar_size); return 0; }
        read_bytes(0, got, bar_size);
        for (size_t i = 0; i < bar_size; i++) {
            if (got[i] != buf[i]) {
                printf("mismatch at 0x%zx: 0x%02x != 0x%02x\n", i, got[i], buf[i]);
                return 1;
            }
        }
        printf("ok %zu bytes\n", bar_size);
        return 0;
    }
    if (!strcmp(op, "flood") && argc == 6) {
        size_t off = strtoul(argv[3], NULL, 0);
        unsigned long count = strtoul(argv[4], NULL, 0);
        uint32_t v = (uint32_t)strtoul(argv[5], NULL, 0);
        if (off + 4 > bar_size || (off & 3)) return usage();
        for (unsigned long i = 0; i < count; i++) *(volatile uint32_t *)(bar + off) = v + (uint32_t)i;
        return 0;
    }
    return usage();
}
