/*
 * blkdrv: the guest's virtio-blk driver, for the data-path benchmark.
 *
 * Against a vfio-user server (--socket PATH) it does what a guest and its
 * VMM do: DMA-maps a memfd sealed against shrinking as guest RAM, sets Bus
 * Master Enable through config space, finds the virtio-pci capabilities,
 * negotiates VERSION_1 (+ INDIRECT_DESC), lays split virtqueues out in that
 * memory, routes MSI-X vectors to eventfds (DEVICE_SET_IRQS) and takes the
 * doorbell ioeventfds (DEVICE_GET_REGION_IO_FDS). The data path then never
 * touches the socket: post requests, write the queue's ioeventfd, sleep on
 * the queue's MSI-X eventfd, reap used entries, repost. --kick posted rings
 * by posted REGION_WRITE instead (what QEMU sends: it never asks for
 * ioeventfds), --kick mapped by a store into the notify page, mapped as QEMU
 * maps a sparse mmap area (a device made with mmapDoorbells). A kick is
 * skipped when the device asked for none (NO_NOTIFY, or EVENT_IDX's
 * avail_event), as Linux's virtqueue_kick_prepare does.
 *
 * With --responder it runs the same driver against a minimal C device of
 * our own, forked and pinned to --server-cpu, sharing the guest memory and
 * eventfds: per queue a thread sleeps on the kick eventfd, walks the avail
 * ring and the indirect tables, copies 4 KiB to or from a RAM disk, fills
 * in the status and the used ring, and writes the interrupt eventfd. The
 * same ring work with no runtime around it: this machine's floor.
 *
 * Workload: 4 KiB requests at random 4 KiB-aligned offsets, reads or
 * writes, --qd in flight per queue, one driver thread per queue.
 * Output: one JSON line (iops, p50_us, p99_us: submit to reap).
 */
#include "vfu.h"

#include <poll.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <sys/wait.h>

#define MAX_QUEUES 8
#define BLOCK 4096u

/* virtio facts (virtio 1.2, 4.1.4.3 common configuration layout) */
enum {
    CC_DFSEL = 0x00, CC_DF = 0x04, CC_GFSEL = 0x08, CC_GF = 0x0c, CC_MSIX = 0x10,
    CC_NUMQ = 0x12, CC_STATUS = 0x14, CC_QSEL = 0x16, CC_QSIZE = 0x18,
    CC_QMSIX = 0x1a, CC_QENABLE = 0x1c, CC_QNOFF = 0x1e, CC_QDESC = 0x20,
    CC_QDRIVER = 0x28, CC_QDEVICE = 0x30,
};
#define F_INDIRECT 28
#define F_EVENT_IDX 29
#define F_VERSION_1 32
#define D_NEXT 1
#define D_WRITE 2
#define D_INDIRECT 4

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };

struct queue {
    int index, size, qd;
    struct desc *desc;          /* ring descriptors (one per request: indirect) */
    volatile uint16_t *avail;   /* flags, idx, ring[size], used_event */
    volatile uint8_t *used;     /* flags, idx, {id u32, len u32}[size], avail_event */
    struct desc *tables;        /* per slot: header, data, status */
    uint8_t *hdr, *data, *status;
    uint64_t g_desc, g_avail, g_used, g_tables, g_hdr, g_data, g_status;
    int kick_fd, irq_fd;
    uint32_t notify_at;         /* the queue's notify offset in the BAR */
    volatile uint16_t *notify;  /* ... in the mapped notify page (--kick mapped) */
    long long kicks;
    uint16_t next_avail, last_used;
    uint64_t *submitted;
    struct samples lat;
    long long ops, done;
    uint64_t rng;
    int write;
    uint64_t disk_blocks;
    int event_idx;              /* VIRTIO_F_EVENT_IDX negotiated: used_event / avail_event */
};

/* virtio's vring_need_event: did the index move past `event` going from old to new? */
static inline int need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
    return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

static inline volatile uint16_t *used_event(struct queue *q) { return &q->avail[2 + q->size]; }
static inline volatile uint16_t *avail_event(struct queue *q) { return (volatile uint16_t *)(q->used + 4 + 8 * q->size); }

static uint32_t bar, common_off, notify_off, notify_mult;
enum { KICK_EVENTFD, KICK_POSTED, KICK_MAPPED };
static int kick_mode = KICK_EVENTFD;
static pthread_mutex_t sock_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t rd(uint32_t off, int size)
{
    uint64_t v = 0;

    region_read(bar, common_off + off, &v, (uint32_t)size);
    return v;
}

static void wr(uint32_t off, int size, uint64_t v)
{
    region_write(bar, common_off + off, &v, (uint32_t)size);
}


static void find_caps(void)
{
    uint8_t cfg[256];
    int found = 0;

    region_read(CONFIG_REGION, 0, cfg, 256);
    for (int at = cfg[0x34], n = 0; at && n < 48; at = cfg[at + 1], n++) {
        if (cfg[at] != 0x09)
            continue;
        switch (cfg[at + 3]) {
        case 1: common_off = get32(cfg + at + 8); bar = cfg[at + 4]; found |= 1; break;
        case 2: notify_off = get32(cfg + at + 8); notify_mult = get32(cfg + at + 16); found |= 2; break;
        }
    }
    if (found != 3)
        die("virtio capabilities not found");
}

/* ---- rings ------------------------------------------------------------ */

static void layout_queue(struct queue *q, int size)
{
    q->size = size;
    q->g_desc = galloc(16u * size, 16);
    q->g_avail = galloc(6 + 2u * size, 2);
    q->g_used = galloc(6 + 8u * size, 4);
    q->g_tables = galloc(48u * q->qd, 16);
    q->g_hdr = galloc(16u * q->qd, 16);
    q->g_status = galloc((size_t)q->qd, 1);
    q->g_data = galloc((size_t)BLOCK * q->qd, BLOCK);
    q->desc = gptr(q->g_desc);
    q->avail = gptr(q->g_avail);
    q->used = gptr(q->g_used);
    q->tables = gptr(q->g_tables);
    q->hdr = gptr(q->g_hdr);
    q->status = gptr(q->g_status);
    q->data = gptr(q->g_data);
    for (int s = 0; s < q->qd; s++) {
        struct desc *t = q->tables + 3 * s;

        t[0] = (struct desc){ q->g_hdr + 16u * s, 16, D_NEXT, 1 };
        t[1] = (struct desc){ q->g_data + (uint64_t)BLOCK * s, BLOCK, D_NEXT, 2 };
        t[2] = (struct desc){ q->g_status + s, 1, D_WRITE, 0 };
        q->desc[s] = (struct desc){ q->g_tables + 48u * s, 48, D_INDIRECT, 0 };
    }
}

static inline uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void post(struct queue *q, int slot)
{
    uint8_t *h = q->hdr + 16 * slot;
    uint64_t sector = (xorshift(&q->rng) % q->disk_blocks) * (BLOCK / 512);

    put32(h, q->write ? 1 : 0);
    put32(h + 4, 0);
    put64(h + 8, sector);
    q->tables[3 * slot + 1].flags = D_NEXT | (q->write ? 0 : D_WRITE);
    q->status[slot] = 0xff;
    q->submitted[slot] = now_ns();
    q->avail[2 + q->next_avail % q->size] = (uint16_t)slot;
    q->next_avail++;
    __atomic_store_n(&q->avail[1], q->next_avail, __ATOMIC_RELEASE);
}

static void kick(struct queue *q, uint16_t old_avail)
{
    uint64_t one = 1;
    uint16_t index = (uint16_t)q->index;

    /* The new avail.idx must be visible before avail_event or used.flags is read. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (q->event_idx) {
        if (!need_event(__atomic_load_n(avail_event(q), __ATOMIC_ACQUIRE), q->next_avail, old_avail))
            return;
    } else if (__atomic_load_n((volatile uint16_t *)q->used, __ATOMIC_ACQUIRE) & 1) {
        return; /* VIRTQ_USED_F_NO_NOTIFY */
    }
    q->kicks++;
    if (kick_mode == KICK_MAPPED) {
        __atomic_store_n(q->notify, index, __ATOMIC_SEQ_CST);
    } else if (kick_mode == KICK_POSTED) {
        pthread_mutex_lock(&sock_lock);
        region_write_posted(bar, q->notify_at, &index, 2);
        pthread_mutex_unlock(&sock_lock);
    } else if (write(q->kick_fd, &one, 8) != 8) {
        die("kick: %s", strerror(errno));
    }
}

static void *drive(void *arg)
{
    struct queue *q = arg;
    long long posted = 0;

    uint16_t old_avail = q->next_avail;

    for (int s = 0; s < q->qd && posted < q->ops; s++, posted++)
        post(q, s);
    kick(q, old_avail);
    int must_wait = 1;
    while (q->done < q->ops) {
        int reposted = 0;
        uint16_t idx;

        if (must_wait && wait_irq(q->irq_fd, STALL_MS) == 0)
            die("queue %d stalled: no interrupt for %d ms with %lld of %lld done; avail.idx %u, last used %u, "
                "used.idx %u, used.flags %u, kicks %lld",
                q->index, STALL_MS, q->done, q->ops, q->next_avail, q->last_used,
                __atomic_load_n((volatile uint16_t *)(q->used + 2), __ATOMIC_ACQUIRE),
                __atomic_load_n((volatile uint16_t *)q->used, __ATOMIC_ACQUIRE), q->kicks);
        old_avail = q->next_avail;
        idx = __atomic_load_n((volatile uint16_t *)(q->used + 2), __ATOMIC_ACQUIRE);
        while (q->last_used != idx) {
            const volatile uint8_t *e = q->used + 4 + 8 * (q->last_used % q->size);
            uint32_t slot = get32((const uint8_t *)e);
            uint64_t t = now_ns();

            q->last_used++;
            if (slot >= (uint32_t)q->qd)
                die("used id %u out of range", slot);
            if (q->status[slot] != 0)
                die("request failed: status %u", q->status[slot]);
            samples_add(&q->lat, t - q->submitted[slot]);
            q->done++;
            if (posted < q->ops) {
                post(q, (int)slot);
                posted++;
                reposted++;
            }
        }
        if (reposted)
            kick(q, old_avail);
        must_wait = 1;
        if (q->event_idx) {
            /* Interrupt me at the next used entry; then look once more, as
             * the device may have published before it saw used_event. */
            __atomic_store_n(used_event(q), q->last_used, __ATOMIC_RELEASE);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            if (__atomic_load_n((volatile uint16_t *)(q->used + 2), __ATOMIC_ACQUIRE) != q->last_used)
                must_wait = 0;
        }
    }
    return NULL;
}

/* ---- the C responder (floor) ------------------------------------------ */

struct rq { struct queue *q; uint8_t *disk; uint64_t disk_bytes; };

static void *respond(void *arg)
{
    struct rq *r = arg;
    struct queue *q = r->q;
    uint16_t seen = 0;

    for (;;) {
        uint64_t v;
        uint16_t idx, used_idx;

        if (read(q->kick_fd, &v, 8) != 8)
            return NULL;
        used_idx = get16((const uint8_t *)q->used + 2);
        uint16_t old_used = used_idx;
    again:
        idx = __atomic_load_n(&q->avail[1], __ATOMIC_ACQUIRE);
        while (seen != idx) {
            uint16_t head = q->avail[2 + seen % q->size];
            struct desc *d = &q->desc[head];
            struct desc *t = gptr(d->addr);
            uint8_t *h = gptr(t[0].addr);
            uint64_t off = get64(h + 8) * 512;
            uint8_t *buf = gptr(t[1].addr);
            uint8_t status = 0;

            if (!(d->flags & D_INDIRECT) || d->len != 48 || off + t[1].len > r->disk_bytes)
                status = 1;
            else if (get32(h) == 1)
                memcpy(r->disk + off, buf, t[1].len);
            else
                memcpy(buf, r->disk + off, t[1].len);
            *(uint8_t *)gptr(t[2].addr) = status;
            volatile uint8_t *e = q->used + 4 + 8 * (used_idx % q->size);
            put32((uint8_t *)e, head);
            put32((uint8_t *)e + 4, get32(h) == 1 ? 1 : t[1].len + 1);
            used_idx++;
            seen++;
        }
        if (q->event_idx) {
            /* Kick me only past what I have seen; then look once more. */
            __atomic_store_n(avail_event(q), seen, __ATOMIC_RELEASE);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            if (__atomic_load_n(&q->avail[1], __ATOMIC_ACQUIRE) != seen)
                goto again;
        }
        if (used_idx == old_used)
            continue;
        __atomic_store_n((volatile uint16_t *)(q->used + 2), used_idx, __ATOMIC_RELEASE);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (q->event_idx && !need_event(__atomic_load_n(used_event(q), __ATOMIC_ACQUIRE), used_idx, old_used))
            continue;
        uint64_t one = 1;
        if (write(q->irq_fd, &one, 8) != 8)
            return NULL;
    }
}

static void usage(void)
{
    fprintf(stderr,
        "usage: blkdrv (--socket PATH | --responder) [--queues N] [--qd D] [--ops N]\n"
        "              [--write] [--disk-mib M] [--cpu C] [--server-cpu S]\n"
        "  --socket PATH  a vfio-user virtio-blk server (muser run virtio-blk PATH --size 64M)\n"
        "  --responder    the floor: a forked C device doing the same ring work\n"
        "  --queues N     queues, one driver thread each (default 1, at most 8)\n"
        "  --qd D         requests in flight per queue (default 1)\n"
        "  --ops N        requests per queue (default 20000), after --warmup\n"
        "  --write        4 KiB writes (default: reads)\n"
        "  --event-idx    negotiate VIRTIO_F_EVENT_IDX (as Linux does): interrupts\n"
        "                 and kicks only when the other side asked for them\n"
        "  --kick K       eventfd (default: the queues' ioeventfds), posted (REGION_WRITE\n"
        "                 with NO_REPLY, as QEMU) or mapped (stores into the notify page of\n"
        "                 muser run virtio-blk --mmap-doorbells); with --socket only\n"
        "  --disk-mib M   disk size used for random offsets (default 64)\n"
        "  --cpu C        driver CPU (default 0; -1 none); --server-cpu: responder's\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int responder = 0, nq = 1, qd = 1, wr_mode = 0, event_idx = 0;
    long long ops = 20000, cpu = 0, server_cpu = 1, disk_mib = 64;
    struct queue qs[MAX_QUEUES];
    pthread_t th[MAX_QUEUES];
    pid_t child = -1;

    prog_name = "blkdrv";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (!strcmp(a, "--responder")) { responder = 1; continue; }
        if (!strcmp(a, "--write")) { wr_mode = 1; continue; }
        if (!strcmp(a, "--event-idx")) { event_idx = 1; continue; }
        if (i + 1 >= argc)
            usage();
        if (!strcmp(a, "--socket")) path = argv[++i];
        else if (!strcmp(a, "--queues")) nq = (int)parse_num(a, argv[++i], 1, MAX_QUEUES);
        else if (!strcmp(a, "--qd")) qd = (int)parse_num(a, argv[++i], 1, 1024);
        else if (!strcmp(a, "--ops")) ops = parse_num(a, argv[++i], 1, 100000000);
        else if (!strcmp(a, "--disk-mib")) disk_mib = parse_num(a, argv[++i], 1, 1 << 20);
        else if (!strcmp(a, "--kick")) {
            const char *k = argv[++i];
            kick_mode = !strcmp(k, "posted") ? KICK_POSTED : !strcmp(k, "mapped") ? KICK_MAPPED : !strcmp(k, "eventfd") ? KICK_EVENTFD : -1;
            if (kick_mode < 0)
                usage();
        }
        else if (!strcmp(a, "--cpu")) cpu = parse_num(a, argv[++i], -1, CPU_SETSIZE - 1);
        else if (!strcmp(a, "--server-cpu")) server_cpu = parse_num(a, argv[++i], -1, CPU_SETSIZE - 1);
        else usage();
    }
    if (!!path == responder || (responder && kick_mode != KICK_EVENTFD))
        usage();

    /* Guest RAM: a memfd sealed against shrinking, as QEMU's memory-backend-memfd. */
    int memfd = guest_create(32u << 20, "blkdrv-guest");

    memset(qs, 0, sizeof(qs));
    for (int i = 0; i < nq; i++) {
        qs[i].index = i;
        qs[i].qd = qd;
        qs[i].ops = ops;
        qs[i].write = wr_mode;
        qs[i].event_idx = event_idx;
        qs[i].rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        qs[i].disk_blocks = (uint64_t)disk_mib * (1u << 20) / BLOCK;
        qs[i].submitted = calloc((size_t)qd, sizeof(uint64_t));
        samples_init(&qs[i].lat, (size_t)ops);
    }

    if (path) {
        uint8_t p[64];
        int fds[16], nfds;
        uint16_t id;

        connect_server(path);
        dma_map_guest(memfd);
        find_caps();
        if ((int)rd(CC_NUMQ, 2) < nq)
            die("the device has %d queues, %d asked for (muser run virtio-blk ... --queues %d)", (int)rd(CC_NUMQ, 2), nq, nq);
        wr(CC_STATUS, 1, 0);
        wr(CC_STATUS, 1, 1);
        wr(CC_STATUS, 1, 3);
        uint64_t offered = 0;
        for (int sel = 0; sel < 2; sel++) {
            wr(CC_DFSEL, 4, (uint64_t)sel);
            offered |= rd(CC_DF, 4) << (32 * sel);
        }
        if (!(offered & (1ull << F_INDIRECT)))
            die("the device does not offer INDIRECT_DESC");
        uint64_t want = (1ull << F_VERSION_1) | (1ull << F_INDIRECT);
        if (event_idx) {
            if (!(offered & (1ull << F_EVENT_IDX)))
                die("the device does not offer EVENT_IDX");
            want |= 1ull << F_EVENT_IDX;
        }
        for (int sel = 0; sel < 2; sel++) {
            wr(CC_GFSEL, 4, (uint64_t)sel);
            wr(CC_GF, 4, (want >> (32 * sel)) & 0xffffffffu);
        }
        wr(CC_STATUS, 1, 11);
        if (!(rd(CC_STATUS, 1) & 8))
            die("FEATURES_OK refused");
        wr(CC_MSIX, 2, 0xffff);
        for (int i = 0; i < nq; i++) {
            struct queue *q = &qs[i];

            wr(CC_QSEL, 2, (uint64_t)i);
            int max = (int)rd(CC_QSIZE, 2);
            if (max < qd)
                die("queue size %d < qd %d", max, qd);
            layout_queue(q, max);
            wr(CC_QDESC, 8, q->g_desc);
            wr(CC_QDRIVER, 8, q->g_avail);
            wr(CC_QDEVICE, 8, q->g_used);
            wr(CC_QMSIX, 2, (uint64_t)(i + 1));
            q->kick_fd = -1;
            q->notify_at = notify_off + (uint32_t)rd(CC_QNOFF, 2) * notify_mult;
            if (kick_mode == KICK_MAPPED)
                q->notify = (volatile uint16_t *)map_region_at(bar, q->notify_at);
            wr(CC_QENABLE, 2, 1);
            q->irq_fd = eventfd(0, EFD_CLOEXEC);
        }
        wr(CC_STATUS, 1, 15);
        /* MSI-X: vector 0 (config) unused, vector i+1 = queue i. */
        int irq[MAX_QUEUES + 1];
        irq[0] = -1;
        for (int i = 0; i < nq; i++)
            irq[i + 1] = qs[i].irq_fd;
        set_msix_eventfds(1, irq + 1, nq);
        /* Doorbells: the queues' ioeventfds. */
        if (kick_mode != KICK_EVENTFD)
            goto kicks_ready;
        put32(p, 16 + 40 * 16);
        put32(p + 4, 0);
        put32(p + 8, bar);
        put32(p + 12, 0);
        send_msg(CMD_GET_REGION_IO_FDS, p, 16, NULL, 0, &id);
        static uint8_t big[16 + 40 * 64];
        uint32_t n = recv_reply_fds(id, big, sizeof(big), fds, &nfds);
        uint32_t count = get32(big + 12);
        for (int i = 0; i < nq; i++) {
            uint32_t want_off = qs[i].notify_at;

            qs[i].kick_fd = -1;
            for (uint32_t k = 0; k < count && 16 + 40 * (k + 1) <= n; k++) {
                const uint8_t *e = big + 16 + 40 * k;
                if (get64(e) == want_off && get32(e + 16) < (uint32_t)nfds)
                    qs[i].kick_fd = fds[get32(e + 16)];
            }
            if (qs[i].kick_fd < 0)
                die("no ioeventfd for queue %d at 0x%x", i, want_off);
        }
    kicks_ready:;
    } else {
        for (int i = 0; i < nq; i++) {
            layout_queue(&qs[i], qd < 256 ? 256 : qd);
            qs[i].kick_fd = eventfd(0, EFD_CLOEXEC);
            qs[i].irq_fd = eventfd(0, EFD_CLOEXEC);
        }
        child = fork();
        if (child < 0)
            die("fork: %s", strerror(errno));
        if (child == 0) {
            prog_name = "blkdrv(responder)";
            pin_cpu((int)server_cpu);
            uint64_t disk_bytes = (uint64_t)disk_mib << 20;
            uint8_t *disk = mmap(NULL, disk_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (disk == MAP_FAILED)
                die("disk: %s", strerror(errno));
            memset(disk, 0, disk_bytes);
            struct rq rs[MAX_QUEUES];
            for (int i = 0; i < nq; i++) {
                rs[i] = (struct rq){ &qs[i], disk, disk_bytes };
                pthread_create(&th[i], NULL, respond, &rs[i]);
            }
            pause(); /* killed by the parent when done */
            _exit(0);
        }
    }

    pin_cpu((int)cpu);
    uint64_t t0 = now_ns();
    for (int i = 0; i < nq; i++)
        pthread_create(&th[i], NULL, drive, &qs[i]);
    for (int i = 0; i < nq; i++)
        pthread_join(th[i], NULL);
    uint64_t t1 = now_ns();
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    }

    struct samples all;
    samples_init(&all, (size_t)(ops * nq));
    for (int i = 0; i < nq; i++)
        for (size_t k = 0; k < qs[i].lat.n; k++)
            samples_add(&all, qs[i].lat.v[k]);
    long long kicks = 0;
    for (int i = 0; i < nq; i++)
        kicks += qs[i].kicks;
    printf("{\"iops\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"queues\":%d,\"qd\":%d,\"ops\":%lld,\"write\":%s,\"event_idx\":%s,\"kicks_per_op\":%.3f,\"kick\":\"%s\",\"target\":\"%s\"}\n",
           (double)(ops * nq) * 1e9 / (double)(t1 - t0), samples_pct_us(&all, 50), samples_pct_us(&all, 99),
           nq, qd, ops * nq, wr_mode ? "true" : "false", event_idx ? "true" : "false", (double)kicks / (double)(ops * nq),
           kick_mode == KICK_MAPPED ? "mapped" : kick_mode == KICK_POSTED ? "posted" : "eventfd", path ? "muser" : "responder");
    return 0;
}
