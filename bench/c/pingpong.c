/*
 * pingpong: the floor for a vfio-user message round trip.
 *
 * Two processes over an AF_UNIX SOCK_STREAM socket pair, both pinned to the
 * same CPU: the client writes a request of --size-req bytes, the server reads
 * exactly that many and writes --size-rep bytes back. No parsing, no
 * allocation: whatever a real server does costs on top of this.
 *
 * With --fd every request also carries one fd (a 1 MiB memfd) as SCM_RIGHTS,
 * which the server receives and closes, modelling DMA_MAP (defaults then
 * become request 16+32, reply 16).
 *
 * With --irqs K the server also writes 1 to an eventfd K times before each
 * reply, modelling a doorbell that raises K interrupts (defaults request 36,
 * reply 32: a 4-byte REGION_WRITE). As loadgen does: for K = 1 the latency
 * is request sent until the eventfd is readable (irq-latency); for K > 1 it
 * is request sent until the reply and all K increments are in (irq-burst).
 *
 * With --reply-every K the client sends K requests back to back and the
 * server answers only the K'th (REGION_WRITE_MULTI with NO_REPLY on all but
 * every K'th message); ops_per_s counts requests, latency is per group.
 *
 * With --server-cpu S the server runs on CPU S (the client stays on --cpu):
 * the cross-CPU floor. With --busy the server busy-polls its socket
 * (non-blocking reads in a loop) instead of sleeping in recv: the floor of
 * a polling server; the client blocks either way.
 *
 * With --connect PATH the client connects to a server listening at PATH
 * instead of forking one (the Node floors in bench/node-floor.ts).
 *
 * Output: one JSON line on stdout.
 */
#include "bench.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <sys/wait.h>

#define MAX_MSG (16u << 20)

static void usage(void)
{
    fprintf(stderr,
        "usage: pingpong --size-req A --size-rep B [--iters N] [--warmup W]\n"
        "                [--cpu C] [--server-cpu S] [--busy] [--fd]\n"
        "  Round trips of A request bytes and B reply bytes between two\n"
        "  processes pinned to CPU C (default 0; -1 = no pinning).\n"
        "  --server-cpu S  the server runs on CPU S (default: C)\n"
        "  --busy     the server busy-polls its socket instead of sleeping\n"
        "  --fd       each request carries one memfd via SCM_RIGHTS\n"
        "             (defaults A=48, B=16: DMA_MAP)\n"
        "  --irqs K   the server writes an eventfd K times before each reply\n"
        "             (defaults A=36, B=32: a doorbell REGION_WRITE)\n"
        "  --connect PATH  talk to a server listening at PATH (no fork)\n"
        "  --reply-every K  only every K'th request is answered (iters and\n"
        "             warmup are rounded up to multiples of K)\n"
        "  --iters    timed round trips (default 100000)\n"
        "  --warmup   untimed round trips first (default iters/10, max 10000)\n"
        "Common vfio-user sizes:\n"
        "  REGION_READ 4 B     --size-req 32   --size-rep 36\n"
        "  REGION_READ 4 KiB   --size-req 32   --size-rep 4128\n"
        "  REGION_WRITE 4 B    --size-req 36   --size-rep 32\n"
        "  REGION_WRITE 4 KiB  --size-req 4128 --size-rep 32\n");
    exit(2);
}

/* Wait until the eventfd is readable, then drain it; returns the counter. */
static uint64_t wait_efd(int efd)
{
    struct pollfd pfd = { .fd = efd, .events = POLLIN };
    uint64_t v;
    int n;

    do
        n = poll(&pfd, 1, 5000);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        die("eventfd: %s", n == 0 ? "no increment within 5 s" : strerror(errno));
    if (read(efd, &v, sizeof(v)) != sizeof(v))
        die("eventfd read: %s", strerror(errno));
    return v;
}

static void serve(int sock, size_t req, size_t rep, int expect_fd, int efd,
                  long long irqs, long long every)
{
    long long seen = 0;

    char *in = malloc(req), *out = calloc(1, rep);

    if (!in || !out)
        die("out of memory");
    for (;;) {
        int fd;

        if (recv_some(sock, in, req, req, &fd) == 0)
            break;
        if (expect_fd) {
            if (fd < 0)
                die("server: request arrived without its fd");
            close(fd);
        } else if (fd >= 0) {
            die("server: unexpected fd");
        }
        for (long long k = 0; k < irqs; k++) {
            uint64_t one = 1;

            if (write(efd, &one, sizeof(one)) != sizeof(one))
                die("server: eventfd write: %s", strerror(errno));
        }
        if (++seen % every == 0)
            send_all(sock, out, rep, -1);
    }
    free(in);
    free(out);
}

int main(int argc, char **argv)
{
    long long req = -1, rep = -1, iters = 100000, warmup = -1, cpu = 0;
    long long irqs = 0, every = 1, server_cpu = -2;
    int busy = 0;
    int use_fd = 0, sv[2], memfd = -1, efd = -1, status;
    struct samples lat;
    char *in, *out;
    uint64_t t_start = 0, t_end;
    pid_t child = -1;
    const char *connect_path = NULL;
    long long i;

    prog_name = "pingpong";
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (!strcmp(a, "--fd")) {
            use_fd = 1;
            continue;
        }
        if (!strcmp(a, "--busy")) {
            busy = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            usage();
        if (i + 1 >= argc)
            usage();
        if (!strcmp(a, "--size-req"))
            req = parse_num(a, argv[++i], 1, MAX_MSG);
        else if (!strcmp(a, "--size-rep"))
            rep = parse_num(a, argv[++i], 1, MAX_MSG);
        else if (!strcmp(a, "--iters"))
            iters = parse_num(a, argv[++i], 1, 100000000);
        else if (!strcmp(a, "--warmup"))
            warmup = parse_num(a, argv[++i], 0, 100000000);
        else if (!strcmp(a, "--cpu"))
            cpu = parse_num(a, argv[++i], -1, CPU_SETSIZE - 1);
        else if (!strcmp(a, "--server-cpu"))
            server_cpu = parse_num(a, argv[++i], -1, CPU_SETSIZE - 1);
        else if (!strcmp(a, "--reply-every"))
            every = parse_num(a, argv[++i], 1, 1000000);
        else if (!strcmp(a, "--connect"))
            connect_path = argv[++i];
        else if (!strcmp(a, "--irqs"))
            irqs = parse_num(a, argv[++i], 1, 100000000);
        else
            usage();
    }
    if (use_fd) {
        if (req < 0)
            req = 16 + 32;
        if (rep < 0)
            rep = 16;
    }
    if (irqs > 0) {
        if (req < 0)
            req = 36;
        if (rep < 0)
            rep = 32;
    }
    if (req < 0 || rep < 0)
        usage();
    if (warmup < 0)
        warmup = iters / 10 < 10000 ? iters / 10 : 10000;
    iters = (iters + every - 1) / every * every;
    warmup = (warmup + every - 1) / every * every;
    if (every > 1 && irqs > 0)
        die("--reply-every and --irqs do not combine");

    /* Before the fork, so the server inherits the same CPU. */
    pin_cpu((int)cpu);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        die("socketpair: %s", strerror(errno));
    if (use_fd) {
        memfd = memfd_create("pingpong-dma", MFD_CLOEXEC);
        if (memfd < 0 || ftruncate(memfd, 1 << 20) != 0)
            die("memfd: %s", strerror(errno));
    }
    if (irqs > 0) {
        efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (efd < 0)
            die("eventfd: %s", strerror(errno));
    }

    if (connect_path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        if (use_fd || irqs > 0 || strlen(connect_path) >= sizeof(sa.sun_path))
            die("--connect takes neither --fd nor --irqs, and a path shorter than %zu bytes", sizeof(sa.sun_path));
        close(sv[1]);
        close(sv[0]);
        sv[0] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        strcpy(sa.sun_path, connect_path);
        if (sv[0] < 0 || connect(sv[0], (struct sockaddr *)&sa, sizeof(sa)) != 0)
            die("connect %s: %s", connect_path, strerror(errno));
    } else {
        child = fork();
    }
    if (child < 0 && !connect_path)
        die("fork: %s", strerror(errno));
    if (child == 0) {
        prog_name = "pingpong(server)";
        if (server_cpu != -2)
            pin_cpu((int)server_cpu);
        recv_busy_poll = busy;
        close(sv[0]);
        if (memfd >= 0)
            close(memfd);
        serve(sv[1], (size_t)req, (size_t)rep, use_fd, efd, irqs, every);
        _exit(0);
    }
    if (!connect_path)
        close(sv[1]);

    in = malloc((size_t)rep);
    out = calloc(1, (size_t)req);
    if (!in || !out)
        die("out of memory");
    samples_init(&lat, (size_t)iters);

    uint64_t t_group = 0;
    for (i = -warmup; i < iters; i++) {
        uint64_t t0, t1 = 0;

        if (i == 0)
            t_start = t_group = now_ns();
        t0 = now_ns();
        send_all(sv[0], out, (size_t)req, memfd);
        if (every > 1) {
            if ((i + warmup + 1) % every == 0) {
                if (recv_some(sv[0], in, (size_t)rep, (size_t)rep, NULL) == 0)
                    die("server closed the socket");
                if (i >= 0) {
                    uint64_t t = now_ns();

                    samples_add(&lat, t - t_group);
                    t_group = t;
                }
            }
            continue;
        }
        if (irqs == 1) {
            if (wait_efd(efd) != 1)
                die("eventfd: unexpected count");
            t1 = now_ns();
        }
        if (recv_some(sv[0], in, (size_t)rep, (size_t)rep, NULL) == 0)
            die("server closed the socket");
        if (irqs > 1) {
            uint64_t got = 0;

            while (got < (uint64_t)irqs)
                got += wait_efd(efd);
            if (got != (uint64_t)irqs)
                die("eventfd: %llu increments, expected %lld",
                    (unsigned long long)got, irqs);
        }
        if (i >= 0)
            samples_add(&lat, (irqs == 1 ? t1 : now_ns()) - t0);
    }
    t_end = now_ns();

    close(sv[0]); /* EOF ends the server loop */
    if (!connect_path && (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0))
        die("server process failed");

    printf("{\"ops_per_s\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f,"
           "\"p10_us\":%.2f,\"iters\":%lld,\"size_req\":%lld,\"size_rep\":%lld,\"fd\":%s,"
           "\"irqs\":%lld,\"irqs_per_s\":%.1f,\"reply_every\":%lld,"
           "\"busy\":%s}\n",
           (double)iters * 1e9 / (double)(t_end - t_start),
           samples_pct_us(&lat, 50), samples_pct_us(&lat, 99),
           samples_pct_us(&lat, 10), iters, req, rep, use_fd ? "true" : "false",
           irqs, (double)(iters * irqs) * 1e9 / (double)(t_end - t_start),
           every, busy ? "true" : "false");
    return 0;
}
