/*
 * nvmedrv: the guest's NVMe driver, for the data-path benchmark.
 *
 * Against a vfio-user server (--socket PATH) it does what a guest and its
 * VMM do: DMA-maps a memfd sealed against shrinking as guest RAM, sets Bus
 * Master Enable through config space, routes MSI-X vectors to eventfds
 * (DEVICE_SET_IRQS), enables the controller (AQA/ASQ/ACQ, CC.EN, CSTS.RDY),
 * asks for I/O queues (Set Features, Number of Queues), optionally hands
 * over shadow doorbell and EventIdx pages (Doorbell Buffer Config), and
 * creates one I/O CQ/SQ pair per --queues, CQ y on MSI-X vector y. The data
 * path: write SQEs, ring the SQ tail doorbell, sleep on the queue's MSI-X
 * eventfd, reap CQEs by phase, ring the CQ head doorbell, resubmit.
 * Doorbells are posted REGION_WRITEs on BAR0 (NO_REPLY), as QEMU forwards
 * MMIO writes; with --mmap-doorbells they are stores into BAR0's doorbell
 * page, mapped as QEMU maps a sparse mmap area (a controller made with
 * mmapDoorbells), and no message at all. With --shadow they go to the shadow page first and reach the
 * controller only when the EventIdx rule asks for it (Linux's
 * nvme_dbbuf_need_event).
 *
 * With --responder the same driver code runs against a minimal C NVMe
 * controller of our own, forked and pinned to --server-cpu: the queues are
 * set up in shared memory directly (no admin queue), and the data path is
 * the same as above, byte for byte: the responder reads the very same
 * posted REGION_WRITE doorbell messages from a socketpair, follows the
 * shadow doorbells and writes EventIdx as a controller does, fetches SQEs,
 * copies 4 KiB to or from a RAM disk (PRP1), posts CQEs with the phase bit
 * and writes the queue's interrupt eventfd. This machine's floor.
 *
 * Workload: 4 KiB reads or writes at random 4 KiB-aligned LBAs (512-byte
 * LBAs), --qd in flight per queue, one driver thread per queue, for
 * --seconds. Output: one JSON line (iops, p50_us, p99_us: submit to reap;
 * doorbells: doorbell messages sent per command).
 */
#include "vfu.h"

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/wait.h>

#define MAX_QUEUES 8
#define BLOCK 4096u
#define LBA 512u
#define QSIZE 256
#define BAR0 0u
#define DOORBELLS 0x1000u

/* NVMe 1.4 facts: register offsets, opcodes (NVM Express Base 3.1, 5, 6). */
enum { R_CAP = 0x00, R_CC = 0x14, R_CSTS = 0x1c, R_AQA = 0x24, R_ASQ = 0x28, R_ACQ = 0x30 };
enum { A_CREATE_SQ = 0x01, A_CREATE_CQ = 0x05, A_SET_FEATURES = 0x09, A_DBBUF = 0x7c };
enum { IO_WRITE = 0x01, IO_READ = 0x02 };
#define CC_ENABLE (1u | (6u << 16) | (4u << 20)) /* EN, IOSQES 64 B, IOCQES 16 B */

struct sqe {
    uint8_t opcode, flags;
    uint16_t cid;
    uint32_t nsid;
    uint64_t rsvd, mptr, prp1, prp2;
    uint32_t cdw10, cdw11, cdw12, cdw13, cdw14, cdw15;
};

struct cqe { uint32_t dw0, dw1; uint16_t sq_head, sq_id; uint16_t cid, status; };

struct queue {
    int qid, size, qd;
    struct sqe *sq;
    volatile struct cqe *cq;
    uint64_t g_sq, g_cq, g_data;
    uint8_t *data;
    uint16_t sq_tail, cq_head, phase;
    volatile uint32_t *shadow_sq, *shadow_cq, *ei_sq, *ei_cq; /* NULL without shadow doorbells */
    int irq_fd;
    uint64_t *submitted;
    struct samples lat;
    long long done, doorbells, stores;
    uint64_t rng, disk_blocks, deadline;
    int write;
};

static uint32_t db_stride = 4;
/* BAR0's doorbell page, mapped (--mmap-doorbells); NULL: doorbells by message. */
static volatile uint8_t *db_page;
static pthread_mutex_t sock_lock = PTHREAD_MUTEX_INITIALIZER;

/* nvme_dbbuf_need_event: did the value move past `event` going from old to new? */
static inline int need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
    return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

static void ring(struct queue *q, int cq_head, uint32_t value)
{
    uint32_t off = DOORBELLS + (uint32_t)(2 * q->qid + cq_head) * db_stride;

    if (db_page) {
        /* The SQEs (or CQ consumption) before the doorbell, as a guest's MMIO store orders them. */
        __atomic_store_n((volatile uint32_t *)(db_page + off - DOORBELLS), value, __ATOMIC_SEQ_CST);
        q->stores++;
        return;
    }
    q->doorbells++;
    pthread_mutex_lock(&sock_lock);
    region_write_posted(BAR0, off, &value, 4);
    pthread_mutex_unlock(&sock_lock);
}

/* Publishes a new SQ tail or CQ head: through the shadow page when there is one. */
static void update(struct queue *q, int cq_head, uint16_t value, uint16_t old)
{
    volatile uint32_t *shadow = cq_head ? q->shadow_cq : q->shadow_sq;

    if (shadow) {
        __atomic_store_n(shadow, value, __ATOMIC_RELEASE);
        /* The new value must be visible before EventIdx is read. */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (!need_event((uint16_t)__atomic_load_n(cq_head ? q->ei_cq : q->ei_sq, __ATOMIC_ACQUIRE), value, old))
            return;
    }
    ring(q, cq_head, value);
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
    struct sqe *e = &q->sq[q->sq_tail];
    uint64_t slba = (xorshift(&q->rng) % q->disk_blocks) * (BLOCK / LBA);

    memset(e, 0, sizeof(*e));
    e->opcode = q->write ? IO_WRITE : IO_READ;
    e->cid = (uint16_t)slot;
    e->nsid = 1;
    e->prp1 = q->g_data + (uint64_t)BLOCK * slot;
    e->cdw10 = (uint32_t)slba;
    e->cdw11 = (uint32_t)(slba >> 32);
    e->cdw12 = BLOCK / LBA - 1;
    q->submitted[slot] = now_ns();
    q->sq_tail = (uint16_t)((q->sq_tail + 1) % q->size);
}

static void *drive(void *arg)
{
    struct queue *q = arg;
    int inflight = 0;
    uint16_t old = q->sq_tail;

    for (int s = 0; s < q->qd; s++, inflight++)
        post(q, s);
    update(q, 0, q->sq_tail, old);
    while (inflight > 0) {
        uint16_t old_head = q->cq_head, old_tail = q->sq_tail;

        if (wait_irq(q->irq_fd, STALL_MS) == 0)
            die("queue %d stalled: no interrupt for %d ms with %lld done and %d in flight; sq tail %u, cq head %u, "
                "phase %u, doorbells %lld",
                q->qid, STALL_MS, q->done, inflight, q->sq_tail, q->cq_head, q->phase, q->doorbells);
        for (;;) {
            volatile struct cqe *c = &q->cq[q->cq_head];
            uint16_t st = __atomic_load_n(&c->status, __ATOMIC_ACQUIRE);
            uint64_t t;

            if ((st & 1) != q->phase)
                break;
            t = now_ns();
            if (c->cid >= q->qd)
                die("completion for cid %u out of range", c->cid);
            if (st >> 1)
                die("command failed: status 0x%x", st >> 1);
            samples_add(&q->lat, t - q->submitted[c->cid]);
            q->done++;
            inflight--;
            if (t < q->deadline) {
                post(q, c->cid);
                inflight++;
            }
            if (++q->cq_head == q->size) {
                q->cq_head = 0;
                q->phase ^= 1;
            }
        }
        if (q->cq_head != old_head)
            update(q, 1, q->cq_head, old_head);
        if (q->sq_tail != old_tail)
            update(q, 0, q->sq_tail, old_tail);
    }
    return NULL;
}

/* ---- the C responder (floor) ------------------------------------------ */

struct responder {
    int sock;
    struct queue *qs;
    int nq;
    uint8_t *disk;
    uint64_t disk_bytes;
    uint16_t sq_head[MAX_QUEUES + 1], sq_tail[MAX_QUEUES + 1], cq_tail[MAX_QUEUES + 1], phase[MAX_QUEUES + 1];
};

/* Executes the commands between the SQ head and `tail`; returns how many completions it posted. */
static int execute(struct responder *r, int qid, uint16_t tail)
{
    struct queue *q = &r->qs[qid - 1];
    int n = 0;

    while (r->sq_head[qid] != tail) {
        const struct sqe *e = &q->sq[r->sq_head[qid]];
        uint64_t off = ((uint64_t)e->cdw11 << 32 | e->cdw10) * LBA;
        uint64_t len = ((uint64_t)(e->cdw12 & 0xffff) + 1) * LBA;
        uint16_t status = 0;
        volatile struct cqe *c;

        r->sq_head[qid] = (uint16_t)((r->sq_head[qid] + 1) % q->size);
        if (e->nsid != 1 || off + len > r->disk_bytes || len > BLOCK || (e->prp1 & (BLOCK - 1)))
            status = 0x80; /* LBA out of range (enough for a floor) */
        else if (e->opcode == IO_WRITE)
            memcpy(r->disk + off, gptr(e->prp1), len);
        else if (e->opcode == IO_READ)
            memcpy(gptr(e->prp1), r->disk + off, len);
        else
            status = 0x01;
        c = &q->cq[r->cq_tail[qid]];
        c->dw0 = 0;
        c->dw1 = 0;
        c->sq_head = r->sq_head[qid];
        c->sq_id = (uint16_t)qid;
        c->cid = e->cid;
        __atomic_store_n(&c->status, (uint16_t)(status << 1 | r->phase[qid]), __ATOMIC_RELEASE);
        if (++r->cq_tail[qid] == q->size) {
            r->cq_tail[qid] = 0;
            r->phase[qid] ^= 1;
        }
        n++;
    }
    return n;
}

static void respond(struct responder *r)
{
    for (;;) {
        uint8_t m[HDR + 16 + 4];
        uint32_t off, value;
        int qid, n = 0;

        if (recv_some(r->sock, m, sizeof(m), sizeof(m), NULL) == 0)
            return;
        if (get16(m + 2) != CMD_REGION_WRITE || get32(m + 4) != sizeof(m) || get32(m + HDR + 8) != BAR0)
            die("unexpected message (command %u, %u bytes)", get16(m + 2), get32(m + 4));
        off = (uint32_t)get64(m + HDR) - DOORBELLS;
        value = get32(m + HDR + 16);
        qid = (int)(off / db_stride / 2);
        if (qid < 1 || qid > r->nq)
            die("doorbell for queue %d", qid);
        struct queue *q = &r->qs[qid - 1];
        if ((off / db_stride) & 1)
            continue; /* CQ head: the CQ (QSIZE) never fills at these depths */
        if (!q->shadow_sq) {
            r->sq_tail[qid] = (uint16_t)value;
            n = execute(r, qid, r->sq_tail[qid]);
        } else {
            for (;;) {
                uint16_t tail = (uint16_t)__atomic_load_n(q->shadow_sq, __ATOMIC_ACQUIRE);

                n += execute(r, qid, tail);
                /* Ring me past what I have seen; then look once more. */
                __atomic_store_n(q->ei_sq, tail, __ATOMIC_RELEASE);
                __atomic_thread_fence(__ATOMIC_SEQ_CST);
                if ((uint16_t)__atomic_load_n(q->shadow_sq, __ATOMIC_ACQUIRE) == tail)
                    break;
            }
        }
        if (n > 0) {
            uint64_t one = 1;

            if (write(q->irq_fd, &one, 8) != 8)
                die("irq eventfd: %s", strerror(errno));
        }
    }
}

/* ---- setup against a real controller ---------------------------------- */

static uint64_t reg_read(uint32_t off, uint32_t size)
{
    uint64_t v = 0;

    region_read(BAR0, off, &v, size);
    return v;
}

static void reg_write(uint32_t off, uint64_t v, uint32_t size)
{
    region_write(BAR0, off, &v, size);
}

static void wait_csts(uint32_t mask, uint32_t want)
{
    for (int i = 0; i < 5000; i++) {
        if (((uint32_t)reg_read(R_CSTS, 4) & mask) == want)
            return;
        usleep(1000);
    }
    die("CSTS never reached 0x%x under mask 0x%x", want, mask);
}

static struct queue admin;

/* Runs one admin command to completion (polling the admin CQ). */
static void admin_cmd(uint8_t opcode, uint64_t prp1, uint64_t prp2, uint32_t cdw10, uint32_t cdw11, const char *what)
{
    struct sqe *e = &admin.sq[admin.sq_tail];

    memset(e, 0, sizeof(*e));
    e->opcode = opcode;
    e->cid = admin.sq_tail;
    e->prp1 = prp1;
    e->prp2 = prp2;
    e->cdw10 = cdw10;
    e->cdw11 = cdw11;
    admin.sq_tail = (uint16_t)((admin.sq_tail + 1) % admin.size);
    reg_write(DOORBELLS, admin.sq_tail, 4);
    for (int i = 0;; i++) {
        volatile struct cqe *c = &admin.cq[admin.cq_head];
        uint16_t st = __atomic_load_n(&c->status, __ATOMIC_ACQUIRE);

        if ((st & 1) == admin.phase) {
            if (++admin.cq_head == admin.size) {
                admin.cq_head = 0;
                admin.phase ^= 1;
            }
            reg_write(DOORBELLS + db_stride, admin.cq_head, 4);
            if (st >> 1)
                die("%s: status 0x%x%s", what, st >> 1, opcode == A_DBBUF ? " (controller started with --no-shadow-doorbells?)" : "");
            return;
        }
        if (i > 5000)
            die("%s: no completion", what);
        usleep(1000);
    }
}

static void usage(void)
{
    fprintf(stderr,
        "usage: nvmedrv (--socket PATH | --responder) [--queues N] [--qd D] [--seconds S]\n"
        "               [--shadow] [--mmap-doorbells] [--write] [--disk-mib M] [--cpu C] [--server-cpu S]\n"
        "  --socket PATH  a vfio-user NVMe controller (muser run nvme PATH --size 64M --queues 2)\n"
        "  --responder    the floor: a forked minimal C NVMe controller (see the header)\n"
        "  --queues N     I/O queue pairs, one driver thread each (default 1, at most 8)\n"
        "  --qd D         commands in flight per queue (default 1, at most 255)\n"
        "  --seconds S    how long to submit (default 2)\n"
        "  --shadow       Doorbell Buffer Config: shadow doorbells with EventIdx\n"
        "  --mmap-doorbells  store doorbells into BAR0's mapped doorbell page (muser run nvme\n"
        "                 --mmap-doorbells): no message per doorbell\n"
        "  --write        4 KiB writes (default: reads)\n"
        "  --disk-mib M   namespace size used for random LBAs (default 64)\n"
        "  --cpu C        driver CPU (default 0; -1 none); --server-cpu: responder's (default 1)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int responder = 0, nq = 1, qd = 1, wr_mode = 0, shadow = 0, mmap_doorbells = 0;
    long long cpu = 0, server_cpu = 1, disk_mib = 64;
    double seconds = 2;
    struct queue qs[MAX_QUEUES];
    pthread_t th[MAX_QUEUES];
    int irq[MAX_QUEUES + 1];
    pid_t child = -1;

    prog_name = "nvmedrv";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (!strcmp(a, "--responder")) { responder = 1; continue; }
        if (!strcmp(a, "--write")) { wr_mode = 1; continue; }
        if (!strcmp(a, "--shadow")) { shadow = 1; continue; }
        if (!strcmp(a, "--mmap-doorbells")) { mmap_doorbells = 1; continue; }
        if (i + 1 >= argc)
            usage();
        if (!strcmp(a, "--socket")) path = argv[++i];
        else if (!strcmp(a, "--queues")) nq = (int)parse_num(a, argv[++i], 1, MAX_QUEUES);
        else if (!strcmp(a, "--qd")) qd = (int)parse_num(a, argv[++i], 1, QSIZE - 1);
        else if (!strcmp(a, "--seconds")) seconds = (double)parse_num(a, argv[++i], 1, 3600);
        else if (!strcmp(a, "--disk-mib")) disk_mib = parse_num(a, argv[++i], 1, 1 << 20);
        else if (!strcmp(a, "--cpu")) cpu = parse_num(a, argv[++i], -1, CPU_SETSIZE - 1);
        else if (!strcmp(a, "--server-cpu")) server_cpu = parse_num(a, argv[++i], -1, CPU_SETSIZE - 1);
        else usage();
    }
    if (!!path == responder || (mmap_doorbells && responder))
        usage();

    int memfd = guest_create(32u << 20, "nvmedrv-guest");
    uint64_t g_dbs = galloc(BLOCK, BLOCK), g_eis = galloc(BLOCK, BLOCK);

    memset(qs, 0, sizeof(qs));
    irq[0] = eventfd(0, EFD_CLOEXEC);
    for (int i = 0; i < nq; i++) {
        struct queue *q = &qs[i];

        q->qid = i + 1;
        q->size = QSIZE;
        q->qd = qd;
        q->phase = 1;
        q->write = wr_mode;
        q->rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        q->disk_blocks = (uint64_t)disk_mib * (1u << 20) / BLOCK;
        q->submitted = calloc((size_t)qd, sizeof(uint64_t));
        samples_init(&q->lat, 4u << 20);
        q->g_sq = galloc(64u * QSIZE, BLOCK);
        q->g_cq = galloc(16u * QSIZE, BLOCK);
        q->g_data = galloc((size_t)BLOCK * qd, BLOCK);
        q->sq = gptr(q->g_sq);
        q->cq = gptr(q->g_cq);
        q->data = gptr(q->g_data);
        if (shadow) {
            /* Doorbell i (SQ y tail: 2y, CQ y head: 2y+1) sits at i * stride in both pages. */
            q->shadow_sq = gptr(g_dbs + (uint64_t)(2 * q->qid) * 4);
            q->shadow_cq = gptr(g_dbs + (uint64_t)(2 * q->qid + 1) * 4);
            q->ei_sq = gptr(g_eis + (uint64_t)(2 * q->qid) * 4);
            q->ei_cq = gptr(g_eis + (uint64_t)(2 * q->qid + 1) * 4);
        }
        q->irq_fd = irq[i + 1] = eventfd(0, EFD_CLOEXEC);
    }

    if (path) {
        connect_server(path);
        dma_map_guest(memfd);
        set_msix_eventfds(0, irq, nq + 1);
        uint64_t cap = reg_read(R_CAP, 8);
        db_stride = 4u << ((cap >> 32) & 0xf);
        if ((int)(cap & 0xffff) + 1 < QSIZE)
            die("the controller's queues hold %d entries, %d needed", (int)(cap & 0xffff) + 1, QSIZE);
        reg_write(R_CC, 0, 4);
        wait_csts(1, 0);
        admin.size = 32;
        admin.phase = 1;
        admin.sq = gptr(galloc(64u * 32, BLOCK));
        admin.cq = gptr(galloc(16u * 32, BLOCK));
        reg_write(R_AQA, (31u << 16) | 31u, 4);
        reg_write(R_ASQ, GUEST_BASE + (uint64_t)((uint8_t *)admin.sq - guest), 8);
        reg_write(R_ACQ, GUEST_BASE + (uint64_t)((uint8_t *)admin.cq - guest), 8);
        reg_write(R_CC, CC_ENABLE, 4);
        wait_csts(3, 1);
        admin_cmd(A_SET_FEATURES, 0, 0, 0x07, ((uint32_t)(nq - 1) << 16) | (uint32_t)(nq - 1), "Set Features (Number of Queues)");
        if (shadow)
            admin_cmd(A_DBBUF, g_dbs, g_eis, 0, 0, "Doorbell Buffer Config");
        for (int i = 0; i < nq; i++) {
            uint32_t qid = (uint32_t)qs[i].qid, dw10 = ((QSIZE - 1u) << 16) | qid;

            admin_cmd(A_CREATE_CQ, qs[i].g_cq, 0, dw10, (qid << 16) | 2u | 1u, "Create I/O CQ");
            admin_cmd(A_CREATE_SQ, qs[i].g_sq, 0, dw10, (qid << 16) | 1u, "Create I/O SQ");
        }
        if (mmap_doorbells)
            db_page = map_region_at(BAR0, DOORBELLS);
    } else {
        int sv[2];

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            die("socketpair: %s", strerror(errno));
        child = fork();
        if (child < 0)
            die("fork: %s", strerror(errno));
        if (child == 0) {
            struct responder r = { .sock = sv[1], .qs = qs, .nq = nq };

            prog_name = "nvmedrv(responder)";
            close(sv[0]);
            pin_cpu((int)server_cpu);
            r.disk_bytes = (uint64_t)disk_mib << 20;
            r.disk = mmap(NULL, r.disk_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (r.disk == MAP_FAILED)
                die("disk: %s", strerror(errno));
            memset(r.disk, 0, r.disk_bytes);
            for (int i = 0; i <= nq; i++)
                r.phase[i] = 1;
            respond(&r);
            _exit(0);
        }
        close(sv[1]);
        sock = sv[0];
    }

    pin_cpu((int)cpu);
    uint64_t t0 = now_ns();
    for (int i = 0; i < nq; i++) {
        qs[i].deadline = t0 + (uint64_t)(seconds * 1e9);
        pthread_create(&th[i], NULL, drive, &qs[i]);
    }
    for (int i = 0; i < nq; i++)
        pthread_join(th[i], NULL);
    uint64_t t1 = now_ns();
    if (child > 0) {
        close(sock);
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    }

    long long ops = 0, doorbells = 0, stores = 0;
    for (int i = 0; i < nq; i++) {
        ops += qs[i].done;
        doorbells += qs[i].doorbells;
        stores += qs[i].stores;
    }
    struct samples all;
    samples_init(&all, (size_t)ops);
    for (int i = 0; i < nq; i++)
        for (size_t k = 0; k < qs[i].lat.n; k++)
            samples_add(&all, qs[i].lat.v[k]);
    printf("{\"iops\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"queues\":%d,\"qd\":%d,\"ops\":%lld,\"write\":%s,\"shadow\":%s,\"doorbells_per_op\":%.3f,\"stores_per_op\":%.3f,\"target\":\"%s\"}\n",
           (double)ops * 1e9 / (double)(t1 - t0), samples_pct_us(&all, 50), samples_pct_us(&all, 99),
           nq, qd, ops, wr_mode ? "true" : "false", shadow ? "true" : "false",
           ops ? (double)doorbells / (double)ops : 0.0, ops ? (double)stores / (double)ops : 0.0, path ? "muser" : "responder");
    return 0;
}
