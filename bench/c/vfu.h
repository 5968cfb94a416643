/*
 * A synchronous vfio-user client for the setup path of the C guest drivers
 * (blkdrv, nvmedrv): the guest RAM (a memfd sealed against shrinking, as
 * QEMU's memory-backend-memfd), message framing with SCM_RIGHTS, region
 * reads and writes, and the VERSION handshake. One connection per process.
 * Kept apart from bench.h because loadgen has its own framing with the
 * same helper names.
 */
#ifndef MUSER_BENCH_VFU_H
#define MUSER_BENCH_VFU_H

#include "bench.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/un.h>

enum {
    CMD_VERSION = 1, CMD_DMA_MAP = 2, CMD_GET_REGION_INFO = 5, CMD_GET_REGION_IO_FDS = 6,
    CMD_SET_IRQS = 8, CMD_REGION_READ = 9, CMD_REGION_WRITE = 10,
};
#define HDR 16u
#define CONFIG_REGION 7u
#define IRQ_MSIX 2u
#define GUEST_BASE 0x10000000ull
#define F_NO_REPLY 0x10u

static uint8_t *guest;
static size_t guest_size;
static uint64_t guest_next = GUEST_BASE;
static int sock = -1;
static uint16_t next_id;
/* What is being done, for error messages (the bench retries a refused VERSION). */
static const char *phase = "setup";

static inline void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static void *gptr(uint64_t g) { return guest + (g - GUEST_BASE); }

static uint64_t galloc(size_t len, size_t align)
{
    uint64_t at = (guest_next + align - 1) / align * align;

    if (at + len > GUEST_BASE + guest_size)
        die("guest memory exhausted");
    guest_next = at + len;
    return at;
}

/* ---- vfio-user, setup only ------------------------------------------- */

static void send_msg_flags(uint16_t cmd, const uint8_t *payload, uint32_t len, const int *fds, int nfds, uint16_t *id, uint32_t flags)
{
    uint8_t buf[HDR + 512];
    union { struct cmsghdr a; char b[CMSG_SPACE(sizeof(int) * 16)]; } ctl;
    struct iovec iov = { .iov_base = buf, .iov_len = HDR + len };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

    if (len > 512 || nfds > 16)
        die("message too large");
    *id = next_id++;
    put16(buf, *id);
    put16(buf + 2, cmd);
    put32(buf + 4, HDR + len);
    put32(buf + 8, flags);
    put32(buf + 12, 0);
    memcpy(buf + HDR, payload, len);
    if (nfds > 0) {
        struct cmsghdr *cm;

        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.b;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    if (sendmsg(sock, &mh, MSG_NOSIGNAL) != (ssize_t)(HDR + len))
        die("sendmsg: %s", strerror(errno));
}

static void send_msg(uint16_t cmd, const uint8_t *payload, uint32_t len, const int *fds, int nfds, uint16_t *id)
{
    send_msg_flags(cmd, payload, len, fds, nfds, id, 0);
}

/* Receives the reply to `id` into rep (payload after the header); fds into fds_out. */
static uint32_t recv_reply_fds(uint16_t id, uint8_t *rep, uint32_t max, int *fds_out, int *nfds)
{
    uint8_t hdr[HDR];
    union { struct cmsghdr a; char b[CMSG_SPACE(sizeof(int) * 16)]; } ctl;
    struct iovec iov = { .iov_base = hdr, .iov_len = HDR };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b) };
    ssize_t n = recvmsg(sock, &mh, MSG_WAITALL | MSG_CMSG_CLOEXEC);
    uint32_t size;

    if (n != HDR)
        die("%s: reply header: %s", phase,
            n >= 0 ? "connection closed" : errno == EAGAIN ? "no reply within the stall limit" : strerror(errno));
    if (nfds)
        *nfds = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));

        for (int i = 0; i < k; i++) {
            int f;

            memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            if (fds_out && *nfds < 16)
                fds_out[(*nfds)++] = f;
            else
                close(f);
        }
    }
    size = get32(hdr + 4);
    if (get16(hdr) != id || (get32(hdr + 8) & 0xf) != 1)
        die("unexpected reply (msg_id %u, flags 0x%x)", get16(hdr), get32(hdr + 8));
    if (get32(hdr + 8) & 0x20)
        die("command %u failed: errno %u", get16(hdr + 2), get32(hdr + 12));
    if (size < HDR || size - HDR > max)
        die("reply of %u bytes", size);
    if (size > HDR && recv(sock, rep, size - HDR, MSG_WAITALL) != (ssize_t)(size - HDR))
        die("reply body: %s", strerror(errno));
    return size - HDR;
}

static uint32_t call(uint16_t cmd, const uint8_t *p, uint32_t len, const int *fds, int nfds, uint8_t *rep, uint32_t max)
{
    uint16_t id;

    send_msg(cmd, p, len, fds, nfds, &id);
    return recv_reply_fds(id, rep, max, NULL, NULL);
}

static void region_write(uint32_t region, uint64_t off, const void *data, uint32_t count)
{
    uint8_t p[16 + 8], rep[64];

    put64(p, off);
    put32(p + 8, region);
    put32(p + 12, count);
    memcpy(p + 16, data, count);
    call(CMD_REGION_WRITE, p, 16 + count, NULL, 0, rep, sizeof(rep));
}

/* A posted write (NO_REPLY), as QEMU sends MMIO writes such as doorbells: no round trip. */
static void region_write_posted(uint32_t region, uint64_t off, const void *data, uint32_t count)
{
    uint8_t p[16 + 8];
    uint16_t id;

    put64(p, off);
    put32(p + 8, region);
    put32(p + 12, count);
    memcpy(p + 16, data, count);
    send_msg_flags(CMD_REGION_WRITE, p, 16 + count, NULL, 0, &id, F_NO_REPLY);
}

static void region_read(uint32_t region, uint64_t off, void *out, uint32_t count)
{
    uint8_t p[16], rep[16 + 256];

    put64(p, off);
    put32(p + 8, region);
    put32(p + 12, count);
    if (call(CMD_REGION_READ, p, 16, NULL, 0, rep, sizeof(rep)) != 16 + count)
        die("REGION_READ: short reply");
    memcpy(out, rep + 16, count);
}

static void connect_server(const char *path)
{
    static const char caps[] = "{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576}}";
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    uint8_t p[4 + sizeof(caps)], rep[512];

    if (strlen(path) >= sizeof(sa.sun_path))
        die("socket path too long");
    strcpy(sa.sun_path, path);
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || connect(sock, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        die("connect %s: %s", path, strerror(errno));
    /* A reply that never comes ends the run with a message, not a bench timeout. */
    struct timeval tv = { .tv_sec = STALL_MS / 1000 };
    if (setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0)
        die("SO_RCVTIMEO: %s", strerror(errno));
    put16(p, 0);
    put16(p + 2, 1);
    memcpy(p + 4, caps, sizeof(caps));
    phase = "VERSION";
    call(CMD_VERSION, p, sizeof(p), NULL, 0, rep, sizeof(rep));
    phase = "setup";
}
/* Creates guest RAM of `size` bytes at GUEST_BASE; returns the memfd (for DMA_MAP). */
static int guest_create(size_t size, const char *name)
{
    int memfd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);

    guest_size = size;
    if (memfd < 0 || ftruncate(memfd, (off_t)guest_size) != 0 ||
        fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)
        die("memfd: %s", strerror(errno));
    guest = mmap(NULL, guest_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (guest == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    return memfd;
}

/* DMA-maps all of guest RAM, read-write, then sets Memory Space + Bus Master Enable. */
static void dma_map_guest(int memfd)
{
    uint8_t p[32], rep[64];
    uint16_t cmd = 0x0006;

    put32(p, 32);
    put32(p + 4, 3); /* read | write */
    put64(p + 8, 0);
    put64(p + 16, GUEST_BASE);
    put64(p + 24, guest_size);
    call(CMD_DMA_MAP, p, 32, &memfd, 1, rep, sizeof(rep));
    /* DMA is refused without Bus Master Enable. */
    region_write(CONFIG_REGION, 4, &cmd, 2);
}

/*
 * Maps the mmap area of `region` that holds offset `at`, as QEMU maps a
 * region's sparse mmap areas into the guest: DEVICE_GET_REGION_INFO gives
 * the region's fd and, in its SPARSE_MMAP capability, the areas. Returns a
 * pointer to `at` in the mapping (a device made with mmapDoorbells).
 */
static volatile uint8_t *map_region_at(uint32_t region, uint64_t at)
{
    uint8_t p[32], rep[512];
    int fds[16], nfds = 0;
    uint16_t id;

    memset(p, 0, sizeof(p));
    put32(p, sizeof(rep));
    put32(p + 8, region);
    send_msg(CMD_GET_REGION_INFO, p, 32, NULL, 0, &id);
    uint32_t n = recv_reply_fds(id, rep, sizeof(rep), fds, &nfds);
    if (n < 32 || nfds < 1)
        die("region %u: no fd to map (was the device started with --mmap-doorbells?)", region);
    uint64_t fd_offset = get64(rep + 24);
    /* Capabilities: {id u16, version u16, next u32}; SPARSE_MMAP (1): nr_areas u32, reserved u32, {offset, size} u64 pairs. */
    for (uint32_t cap = get32(rep + 12); cap && cap + 16 <= n; cap = get32(rep + cap + 4)) {
        if (get16(rep + cap) != 1)
            continue;
        uint32_t areas = get32(rep + cap + 8);
        for (uint32_t k = 0; k < areas && cap + 16 + 16 * (k + 1) <= n; k++) {
            uint64_t off = get64(rep + cap + 16 + 16 * k), size = get64(rep + cap + 24 + 16 * k);
            if (at < off || at >= off + size)
                continue;
            uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], (off_t)(fd_offset + off));
            if (m == MAP_FAILED)
                die("mmap of region %u at 0x%llx: %s", region, (unsigned long long)off, strerror(errno));
            for (int i = 0; i < nfds; i++)
                close(fds[i]);
            return m + (at - off);
        }
    }
    die("region %u: no sparse mmap area holds 0x%llx", region, (unsigned long long)at);
    return NULL;
}

/* Routes MSI-X vectors first..first+n-1 to the eventfds fds[0..n-1]. */
static void set_msix_eventfds(uint32_t first, const int *fds, int n)
{
    uint8_t p[20], rep[64];

    put32(p, 20);
    put32(p + 4, (1u << 2) | (1u << 5)); /* DATA_EVENTFD | ACTION_TRIGGER */
    put32(p + 8, IRQ_MSIX);
    put32(p + 12, first);
    put32(p + 16, (uint32_t)n);
    call(CMD_SET_IRQS, p, 20, fds, n, rep, sizeof(rep));
}

#endif /* MUSER_BENCH_VFU_H */
