/*
 * loadgen: a minimal vfio-user client that drives one operation in a tight
 * loop against a device server, so the generator is never the bottleneck.
 *
 * Blocking I/O, one write per request, no allocation in the loop. Replies
 * are read with one recv in the common case (asking for at most the expected
 * reply size, so a reply is never read past in lock-step operation), then
 * validated: reply type, command, msg_id, error bit, size. Any protocol
 * error ends the program with a message and exit status 1.
 *
 * Output: one JSON line on stdout.
 */
#include "bench.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/un.h>

/* Protocol facts: QEMU docs/interop/vfio-user.rst, linux/vfio.h. */
enum {
    CMD_VERSION = 1,
    CMD_DMA_MAP = 2,
    CMD_DMA_UNMAP = 3,
    CMD_DEVICE_SET_IRQS = 8,
    CMD_REGION_READ = 9,
    CMD_REGION_WRITE = 10,
    CMD_REGION_WRITE_MULTI = 15,
};

#define F_TYPE_MASK     0xfu
#define F_TYPE_COMMAND  0x0u
#define F_TYPE_REPLY    0x1u
#define F_NO_REPLY      0x10u
#define F_ERROR         0x20u

#define HDR_SIZE        16u
#define RW_HDR_SIZE     (HDR_SIZE + 16u)   /* + offset u64, region u32, count u32 */

#define DMA_FLAG_RW     0x3u               /* readable | writeable */
#define DMA_SIZE        (1u << 20)

#define IRQ_INDEX_MSIX          2u         /* VFIO_PCI_MSIX_IRQ_INDEX */
#define IRQ_SET_DATA_EVENTFD    (1u << 2)
#define IRQ_SET_ACTION_TRIGGER  (1u << 5)

/* REGION_WRITE_MULTI as QEMU sends it (hw/vfio-user/protocol.h). */
#define MULTI_MAX       200u               /* VFIO_USER_MULTI_MAX */
#define MULTI_DATA      8u                 /* VFIO_USER_MULTI_DATA */
#define MULTI_ENTRY     24u                /* offset u64, region u32, count u32, data[8] */
#define MULTI_HDR       (HDR_SIZE + 8u)    /* + wr_cnt u64 */

/* Large enough for a max_data_xfer_size (1 MiB) region access. */
#define MAX_MSG         (RW_HDR_SIZE + (1u << 20))

static const char version_json[] =
    "{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,"
    "\"pgsizes\":4096,\"max_dma_maps\":65535,\"write_multiple\":true}}";

struct conn {
    int sock;
    uint16_t next_id;
    /* Static buffers: the hot loops never allocate. */
    uint8_t req[MAX_MSG];
    uint8_t rep[MAX_MSG];
};

static inline void put16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static inline void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); }
static inline void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); }
static inline uint16_t get16(const uint8_t *p) { return p[0] | (uint16_t)p[1] << 8; }
static inline uint32_t get32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static inline uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

static const char *cmd_name(unsigned cmd)
{
    switch (cmd) {
    case CMD_VERSION: return "VERSION";
    case CMD_DMA_MAP: return "DMA_MAP";
    case CMD_DMA_UNMAP: return "DMA_UNMAP";
    case CMD_DEVICE_SET_IRQS: return "DEVICE_SET_IRQS";
    case CMD_REGION_READ: return "REGION_READ";
    case CMD_REGION_WRITE: return "REGION_WRITE";
    case CMD_REGION_WRITE_MULTI: return "REGION_WRITE_MULTI";
    default: return "?";
    }
}

/* Fill the 16-byte header of c->req; returns the msg_id used. */
static uint16_t put_hdr(struct conn *c, uint16_t cmd, uint32_t size,
                        uint32_t flags)
{
    uint16_t id = c->next_id++;

    put16(c->req + 0, id);
    put16(c->req + 2, cmd);
    put32(c->req + 4, size);
    put32(c->req + 8, F_TYPE_COMMAND | flags);
    put32(c->req + 12, 0);
    return id;
}

/*
 * Read the reply to (id, cmd) into c->rep and return its total size.
 * max is the largest reply we accept; we never ask the socket for more,
 * so nothing beyond this reply is consumed while in lock-step.
 */
static uint32_t recv_reply(struct conn *c, uint16_t id, uint16_t cmd,
                           uint32_t max)
{
    size_t got;
    uint32_t size, flags;

    got = recv_some(c->sock, c->rep, HDR_SIZE, max, NULL);
    if (got == 0)
        die("%s: server closed the connection", cmd_name(cmd));
    size = get32(c->rep + 4);
    flags = get32(c->rep + 8);
    if ((flags & F_TYPE_MASK) != F_TYPE_REPLY)
        die("%s: expected a reply, got message type %u (command %u)",
            cmd_name(cmd), flags & F_TYPE_MASK, get16(c->rep + 2));
    if (get16(c->rep + 0) != id || get16(c->rep + 2) != cmd)
        die("%s: reply for msg_id %u command %u, expected msg_id %u",
            cmd_name(cmd), get16(c->rep), get16(c->rep + 2), id);
    if (flags & F_ERROR)
        die("%s: error reply: %s (errno %u)", cmd_name(cmd),
            strerror((int)get32(c->rep + 12)), get32(c->rep + 12));
    if (size < HDR_SIZE || size > max || size < got)
        die("%s: bad reply size %u (max %u, %zu bytes already read)",
            cmd_name(cmd), size, max, got);
    if (got < size)
        recv_some(c->sock, c->rep + got, size - got, size - got, NULL);
    return size;
}

static void expect_size(uint16_t cmd, uint32_t got, uint32_t want)
{
    if (got != want)
        die("%s: reply size %u, expected %u", cmd_name(cmd), got, want);
}

static void connect_socket(struct conn *c, const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    if (strlen(path) >= sizeof(sa.sun_path))
        die("socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    c->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->sock < 0)
        die("socket: %s", strerror(errno));
    if (connect(c->sock, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        die("connect %s: %s", path, strerror(errno));
}

static void negotiate(struct conn *c)
{
    uint32_t size = HDR_SIZE + 4 + sizeof(version_json); /* JSON incl. NUL */
    uint32_t rsize;
    uint16_t id;

    id = put_hdr(c, CMD_VERSION, size, 0);
    put16(c->req + 16, 0); /* major */
    put16(c->req + 18, 1); /* minor */
    memcpy(c->req + 20, version_json, sizeof(version_json));
    send_all(c->sock, c->req, size, -1);

    rsize = recv_reply(c, id, CMD_VERSION, sizeof(c->rep));
    if (rsize < HDR_SIZE + 4)
        die("VERSION: reply too short (%u bytes)", rsize);
    if (get16(c->rep + 16) != 0)
        die("VERSION: server major version %u, expected 0", get16(c->rep + 16));
    if (rsize > HDR_SIZE + 4 && c->rep[rsize - 1] != '\0')
        die("VERSION: reply capabilities are not NUL-terminated");
}

/* Generic options; unused ones are ignored by ops that do not need them. */
struct opts {
    const char *path, *op;
    long long iters, warmup, size, count, entries, reply_every, cpu;
    long long region, offset;
    long long duration_ms, start_at_ns;   /* read/write: timed window mode */
};

struct result {
    uint64_t elapsed_ns;
    struct samples lat;
};

static void print_iters(const struct opts *o, struct result *r, double ops,
                        long long iters)
{
    printf("{\"op\":\"%s\",\"ops_per_s\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f,"
           "\"p10_us\":%.2f,\"iters\":%lld",
           o->op, ops * 1e9 / (double)r->elapsed_ns,
           samples_pct_us(&r->lat, 50), samples_pct_us(&r->lat, 99),
           samples_pct_us(&r->lat, 10), iters);
}

static void print_common(const struct opts *o, struct result *r, double ops)
{
    print_iters(o, r, ops, o->iters);
}

/* Sleep until CLOCK_MONOTONIC reaches t (ns). */
static void sleep_until(uint64_t t)
{
    struct timespec ts = { .tv_sec = (time_t)(t / 1000000000ull),
                           .tv_nsec = (long)(t % 1000000000ull) };

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* ---- read / write ------------------------------------------------------ */

static void one_rw(struct conn *c, int write, uint32_t region, uint64_t off,
                   uint32_t count)
{
    uint16_t cmd = write ? CMD_REGION_WRITE : CMD_REGION_READ;
    uint32_t size = RW_HDR_SIZE + (write ? count : 0);
    uint32_t want = RW_HDR_SIZE + (write ? 0 : count);
    uint32_t rsize;
    uint16_t id;

    id = put_hdr(c, cmd, size, 0);
    put64(c->req + 16, off);
    put32(c->req + 24, region);
    put32(c->req + 28, count);
    send_all(c->sock, c->req, size, -1);
    rsize = recv_reply(c, id, cmd, want);
    expect_size(cmd, rsize, want);
    if (get32(c->rep + 28) != count)
        die("%s: reply count %u, expected %u", cmd_name(cmd),
            get32(c->rep + 28), count);
}

/*
 * Timed window mode (--duration-ms, optionally --start-at-ns): operations
 * run from the start time (CLOCK_MONOTONIC, the clock of Node's
 * process.hrtime) until start + duration, so several clients started at
 * different moments measure the same window. late_us > 0 says the warmup
 * ended after the window opened.
 */
static void run_rw_window(struct conn *c, const struct opts *o, int write,
                          uint32_t n)
{
    struct result r;
    uint64_t start, end, t, late = 0;
    long long done = 0;

    samples_init(&r.lat, (size_t)(o->duration_ms * 400 + 1));
    t = now_ns();
    if (o->start_at_ns > 0) {
        if ((uint64_t)o->start_at_ns > t)
            sleep_until((uint64_t)o->start_at_ns);
        else
            late = t - (uint64_t)o->start_at_ns;
        start = (uint64_t)o->start_at_ns;
    } else {
        start = t;
    }
    end = start + (uint64_t)o->duration_ms * 1000000ull;
    t = now_ns();
    if (t > start)
        start = t;
    while (t < end) {
        uint64_t t0 = t;

        one_rw(c, write, (uint32_t)o->region, (uint64_t)o->offset, n);
        t = now_ns();
        samples_add(&r.lat, t - t0);
        done++;
    }
    r.elapsed_ns = t > start ? t - start : 1;
    print_iters(o, &r, (double)done, done);
    printf(",\"size\":%u,\"window_ns\":%llu,\"late_us\":%.1f}\n", n,
           (unsigned long long)r.elapsed_ns, (double)late / 1000.0);
}

static void run_rw(struct conn *c, const struct opts *o, int write)
{
    struct result r;
    uint32_t n = (uint32_t)o->size;
    long long i;

    if (write)
        memset(c->req + RW_HDR_SIZE, 0xa5, n);
    for (i = 0; i < o->warmup; i++)
        one_rw(c, write, (uint32_t)o->region, (uint64_t)o->offset, n);
    if (o->duration_ms > 0) {
        run_rw_window(c, o, write, n);
        return;
    }
    samples_init(&r.lat, (size_t)o->iters);
    uint64_t start = now_ns();
    for (i = 0; i < o->iters; i++) {
        uint64_t t0 = now_ns();

        one_rw(c, write, (uint32_t)o->region, (uint64_t)o->offset, n);
        samples_add(&r.lat, now_ns() - t0);
    }
    r.elapsed_ns = now_ns() - start;
    print_common(o, &r, (double)o->iters);
    printf(",\"size\":%u}\n", n);
}

/* ---- dma --------------------------------------------------------------- */

static void dma_map(struct conn *c, int fd, uint64_t iova)
{
    uint16_t id = put_hdr(c, CMD_DMA_MAP, HDR_SIZE + 32, 0);

    put32(c->req + 16, 32);          /* argsz */
    put32(c->req + 20, DMA_FLAG_RW);
    put64(c->req + 24, 0);           /* fd offset */
    put64(c->req + 32, iova);
    put64(c->req + 40, DMA_SIZE);
    send_all(c->sock, c->req, HDR_SIZE + 32, fd);
    expect_size(CMD_DMA_MAP, recv_reply(c, id, CMD_DMA_MAP, HDR_SIZE),
                HDR_SIZE);
}

static void dma_unmap(struct conn *c, uint64_t iova)
{
    uint16_t id = put_hdr(c, CMD_DMA_UNMAP, HDR_SIZE + 24, 0);

    put32(c->req + 16, 24);          /* argsz: room for the echoed entry */
    put32(c->req + 20, 0);
    put64(c->req + 24, iova);
    put64(c->req + 32, DMA_SIZE);
    send_all(c->sock, c->req, HDR_SIZE + 24, -1);
    /* The spec says the entry is echoed back; accept a bare header too. */
    recv_reply(c, id, CMD_DMA_UNMAP, HDR_SIZE + 24);
}

static void run_dma(struct conn *c, const struct opts *o)
{
    struct samples map_lat, unmap_lat;
    struct result r;
    int fd;
    long long i;

    fd = memfd_create("loadgen-dma", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, DMA_SIZE) != 0)
        die("memfd: %s", strerror(errno));
    /* Step the IOVA so a server that caches or defers unmaps still sees
     * fresh, non-overlapping ranges. */
    uint64_t base = 1ull << 32;
#define IOVA(i) (base + (uint64_t)((i) % 4096) * DMA_SIZE)
    for (i = 0; i < o->warmup; i++) {
        dma_map(c, fd, IOVA(i));
        dma_unmap(c, IOVA(i));
    }
    samples_init(&r.lat, (size_t)o->iters);
    samples_init(&map_lat, (size_t)o->iters);
    samples_init(&unmap_lat, (size_t)o->iters);
    uint64_t start = now_ns();
    for (i = 0; i < o->iters; i++) {
        uint64_t t0 = now_ns(), t1, t2;

        dma_map(c, fd, IOVA(i));
        t1 = now_ns();
        dma_unmap(c, IOVA(i));
        t2 = now_ns();
        samples_add(&r.lat, t2 - t0);
        samples_add(&map_lat, t1 - t0);
        samples_add(&unmap_lat, t2 - t1);
    }
#undef IOVA
    r.elapsed_ns = now_ns() - start;
    print_common(o, &r, (double)o->iters);
    printf(",\"map_p50_us\":%.2f,\"unmap_p50_us\":%.2f,\"map_size\":%u}\n",
           samples_pct_us(&map_lat, 50), samples_pct_us(&unmap_lat, 50),
           DMA_SIZE);
    close(fd);
}

/* ---- irq-latency / irq-burst ------------------------------------------ */

static int setup_irq(struct conn *c)
{
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    uint16_t id;

    if (efd < 0)
        die("eventfd: %s", strerror(errno));
    id = put_hdr(c, CMD_DEVICE_SET_IRQS, HDR_SIZE + 20, 0);
    put32(c->req + 16, 20);          /* argsz */
    put32(c->req + 20, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER);
    put32(c->req + 24, IRQ_INDEX_MSIX);
    put32(c->req + 28, 0);           /* start */
    put32(c->req + 32, 1);           /* count */
    send_all(c->sock, c->req, HDR_SIZE + 20, efd);
    expect_size(CMD_DEVICE_SET_IRQS,
                recv_reply(c, id, CMD_DEVICE_SET_IRQS, HDR_SIZE), HDR_SIZE);
    return efd;
}

static uint16_t send_doorbell(struct conn *c, uint32_t value)
{
    uint16_t id = put_hdr(c, CMD_REGION_WRITE, RW_HDR_SIZE + 4, 0);

    put64(c->req + 16, (uint64_t)0);
    put32(c->req + 24, 1);           /* region 1: doorbell */
    put32(c->req + 28, 4);
    put32(c->req + 32, value);
    send_all(c->sock, c->req, RW_HDR_SIZE + 4, -1);
    return id;
}

static void doorbell_reply(struct conn *c, uint16_t id)
{
    expect_size(CMD_REGION_WRITE,
                recv_reply(c, id, CMD_REGION_WRITE, RW_HDR_SIZE), RW_HDR_SIZE);
}

static void run_irq_latency(struct conn *c, const struct opts *o)
{
    int efd = setup_irq(c);
    uint64_t irqs = 0;
    struct result r;
    long long i;

    samples_init(&r.lat, (size_t)o->iters);
    uint64_t start = 0;
    for (i = -o->warmup; i < o->iters; i++) {
        uint64_t t0, t1, v;
        uint16_t id;

        if (i == 0)
            start = now_ns();
        t0 = now_ns();
        id = send_doorbell(c, 1);
        v = wait_irq(efd, 5000);
        t1 = now_ns();
        if (v == 0)
            die("irq-latency: no interrupt within 5 s of doorbell %lld", i);
        doorbell_reply(c, id);
        if (i >= 0) {
            samples_add(&r.lat, t1 - t0);
            irqs += v;
        }
    }
    r.elapsed_ns = now_ns() - start;
    print_common(o, &r, (double)o->iters);
    printf(",\"irqs\":%llu}\n", (unsigned long long)irqs);
    close(efd);
}

static void run_irq_burst(struct conn *c, const struct opts *o)
{
    int efd = setup_irq(c);
    uint32_t count = (uint32_t)o->count;
    uint64_t irqs = 0;
    struct result r;
    long long i;

    samples_init(&r.lat, (size_t)o->iters);
    uint64_t start = 0;
    for (i = -o->warmup; i < o->iters; i++) {
        uint64_t t0 = now_ns(), got = 0;
        uint16_t id;

        if (i == 0)
            start = t0;
        id = send_doorbell(c, count);
        doorbell_reply(c, id);
        /* The device signals before replying, but a server may coalesce
         * increments: collect until this doorbell's count is in. */
        while (got < count) {
            uint64_t v = wait_irq(efd, 5000);

            if (v == 0)
                die("irq-burst: only %llu of %u interrupts arrived",
                    (unsigned long long)got, count);
            got += v;
        }
        if (got != count)
            die("irq-burst: %llu interrupts for a doorbell of %u",
                (unsigned long long)got, count);
        if (i >= 0) {
            samples_add(&r.lat, now_ns() - t0);
            irqs += got;
        }
    }
    r.elapsed_ns = now_ns() - start;
    print_common(o, &r, (double)o->iters);
    printf(",\"irqs\":%llu,\"irqs_per_s\":%.1f,\"count\":%u}\n",
           (unsigned long long)irqs,
           (double)irqs * 1e9 / (double)r.elapsed_ns, count);
    close(efd);
}

/* ---- write-multi ------------------------------------------------------- */

/*
 * Build a REGION_WRITE_MULTI of n 4-byte writes to consecutive u32 slots of
 * the region. Entries are filled once; only the header changes per message.
 */
static void build_multi(struct conn *c, const struct opts *o, uint32_t n)
{
    memset(c->req, 0, MULTI_HDR + n * MULTI_ENTRY);
    put64(c->req + HDR_SIZE, n);
    for (uint32_t j = 0; j < n; j++) {
        uint8_t *e = c->req + MULTI_HDR + j * MULTI_ENTRY;

        put64(e + 0, (uint64_t)o->offset + (j * 4u) % (uint32_t)o->size);
        put32(e + 8, (uint32_t)o->region);
        put32(e + 12, 4);
        put32(e + 16, j);            /* data[8]: 4 used, rest zero */
    }
}

/* Send one message; if it asks for a reply, wait for and check it. */
static void one_multi(struct conn *c, uint32_t n, int want_reply)
{
    uint32_t size = MULTI_HDR + n * MULTI_ENTRY;
    uint16_t id = put_hdr(c, CMD_REGION_WRITE_MULTI, size,
                          want_reply ? 0 : F_NO_REPLY);

    send_all(c->sock, c->req, size, -1);
    if (want_reply) {
        uint32_t rsize = recv_reply(c, id, CMD_REGION_WRITE_MULTI, MULTI_HDR);

        expect_size(CMD_REGION_WRITE_MULTI, rsize, MULTI_HDR);
        if (get64(c->rep + HDR_SIZE) != n)
            die("REGION_WRITE_MULTI: reply wr_cnt %llu, expected %u",
                (unsigned long long)get64(c->rep + HDR_SIZE), n);
    }
}

static void run_write_multi(struct conn *c, const struct opts *o)
{
    uint32_t n = (uint32_t)o->entries;
    long long k = o->reply_every, i, groups = 0;
    struct result r;

    build_multi(c, o, n);
    /* Warm-up, ending on a replied message so the timed part starts idle. */
    for (i = 1; i <= o->warmup; i++)
        one_multi(c, n, i % k == 0 || i == o->warmup);

    samples_init(&r.lat, (size_t)(o->iters / k + 1));
    uint64_t start = now_ns(), t0 = start;
    for (i = 1; i <= o->iters; i++) {
        /* The last message always asks for a reply: the run is only over
         * when the server has processed every write. */
        int sync = i % k == 0 || i == o->iters;

        one_multi(c, n, sync);
        if (sync) {
            uint64_t t = now_ns();

            samples_add(&r.lat, t - t0);
            t0 = t;
            groups++;
        }
    }
    r.elapsed_ns = now_ns() - start;
    print_common(o, &r, (double)o->iters * n);
    printf(",\"msgs_per_s\":%.1f,\"writes_per_s\":%.1f,\"entries\":%u,"
           "\"reply_every\":%lld,\"groups\":%lld}\n",
           (double)o->iters * 1e9 / (double)r.elapsed_ns,
           (double)o->iters * n * 1e9 / (double)r.elapsed_ns, n, k, groups);
}

/* ---- main -------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
        "usage: loadgen SOCKET OP [options]\n"
        "OP:\n"
        "  read         REGION_READ of --size bytes at region --region offset --offset\n"
        "  write        REGION_WRITE of --size bytes, same place\n"
        "  dma          DMA_MAP of a 1 MiB memfd (fd via SCM_RIGHTS) then DMA_UNMAP;\n"
        "               latency is the pair (map_p50_us/unmap_p50_us split it)\n"
        "  irq-latency  SET_IRQS MSI-X (index 2) vector 0 -> eventfd; then doorbell\n"
        "               writes of 1 to region 1 offset 0; latency = send to eventfd\n"
        "               readable\n"
        "  irq-burst    same setup, doorbell value --count; reports irqs_per_s\n"
        "               (latency = doorbell send until all its interrupts are in)\n"
        "  write-multi  REGION_WRITE_MULTI of --entries 4-byte writes to region\n"
        "               --region, NO_REPLY except every --reply-every'th message;\n"
        "               ops_per_s = writes/s, latency = per replied group\n"
        "options:\n"
        "  --iters N        timed operations (messages for write-multi; default 100000)\n"
        "  --warmup N       untimed operations first (default iters/10, max 10000)\n"
        "  --size S         read/write size, 1..1048576 (default 4); for write-multi\n"
        "                   the span of region offsets written (default 4096)\n"
        "  --region R       region for read/write/write-multi (default 0)\n"
        "  --offset O       region offset for read/write/write-multi (default 0)\n"
        "  --count C        irq-burst doorbell value (default 1000)\n"
        "  --entries E      write-multi entries per message, 1..%u (default %u)\n"
        "  --reply-every K  write-multi: every K'th message asks for a reply (default 8)\n"
        "  --cpu C          pin to CPU C (default 0; -1 = no pinning)\n"
        "  --duration-ms D  read/write: run for D ms instead of --iters\n"
        "  --start-at-ns T  read/write with --duration-ms: after warmup, wait until\n"
        "                   CLOCK_MONOTONIC T (ns) to start the window, so several\n"
        "                   clients measure the same window\n",
        MULTI_MAX, MULTI_MAX);
    exit(2);
}

int main(int argc, char **argv)
{
    static struct conn c;
    struct opts o = {
        .iters = 100000, .warmup = -1, .size = -1, .count = 1000,
        .entries = MULTI_MAX, .reply_every = 8, .cpu = 0,
    };
    int i;

    prog_name = "loadgen";
    if (argc < 3)
        usage();
    o.path = argv[1];
    o.op = argv[2];
    for (i = 3; i < argc; i++) {
        const char *a = argv[i];

        if (i + 1 >= argc)
            usage();
        if (!strcmp(a, "--iters"))
            o.iters = parse_num(a, argv[++i], 1, 100000000);
        else if (!strcmp(a, "--warmup"))
            o.warmup = parse_num(a, argv[++i], 0, 100000000);
        else if (!strcmp(a, "--size"))
            o.size = parse_num(a, argv[++i], 1, 1 << 20);
        else if (!strcmp(a, "--region"))
            o.region = parse_num(a, argv[++i], 0, UINT32_MAX);
        else if (!strcmp(a, "--offset"))
            o.offset = parse_num(a, argv[++i], 0, INT64_MAX);
        else if (!strcmp(a, "--count"))
            o.count = parse_num(a, argv[++i], 1, UINT32_MAX);
        else if (!strcmp(a, "--entries"))
            o.entries = parse_num(a, argv[++i], 1, MULTI_MAX);
        else if (!strcmp(a, "--reply-every"))
            o.reply_every = parse_num(a, argv[++i], 1, 1000000);
        else if (!strcmp(a, "--cpu"))
            o.cpu = parse_num(a, argv[++i], -1, CPU_SETSIZE - 1);
        else if (!strcmp(a, "--duration-ms"))
            o.duration_ms = parse_num(a, argv[++i], 1, 3600000);
        else if (!strcmp(a, "--start-at-ns"))
            o.start_at_ns = parse_num(a, argv[++i], 1, INT64_MAX);
        else
            usage();
    }
    if (o.warmup < 0)
        o.warmup = o.iters / 10 < 10000 ? o.iters / 10 : 10000;
    if (o.size < 0)
        o.size = strcmp(o.op, "write-multi") ? 4 : 4096;
    if (!strcmp(o.op, "write-multi") && o.size < 4)
        die("write-multi: --size must be at least 4");

    pin_cpu((int)o.cpu);
    connect_socket(&c, o.path);
    negotiate(&c);

    if (!strcmp(o.op, "read"))
        run_rw(&c, &o, 0);
    else if (!strcmp(o.op, "write"))
        run_rw(&c, &o, 1);
    else if (!strcmp(o.op, "dma"))
        run_dma(&c, &o);
    else if (!strcmp(o.op, "irq-latency"))
        run_irq_latency(&c, &o);
    else if (!strcmp(o.op, "irq-burst"))
        run_irq_burst(&c, &o);
    else if (!strcmp(o.op, "write-multi"))
        run_write_multi(&c, &o);
    else
        usage();
    close(c.sock);
    return 0;
}
