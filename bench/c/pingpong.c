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
 * Output: one JSON line on stdout.
 */
#include "bench.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define MAX_MSG (16u << 20)

static void usage(void)
{
    fprintf(stderr,
        "usage: pingpong --size-req A --size-rep B [--iters N] [--warmup W]\n"
        "                [--cpu C] [--fd]\n"
        "  Round trips of A request bytes and B reply bytes between two\n"
        "  processes pinned to CPU C (default 0; -1 = no pinning).\n"
        "  --fd       each request carries one memfd via SCM_RIGHTS\n"
        "             (defaults A=48, B=16: DMA_MAP)\n"
        "  --iters    timed round trips (default 100000)\n"
        "  --warmup   untimed round trips first (default iters/10, max 10000)\n"
        "Common vfio-user sizes:\n"
        "  REGION_READ 4 B     --size-req 32   --size-rep 36\n"
        "  REGION_READ 4 KiB   --size-req 32   --size-rep 4128\n"
        "  REGION_WRITE 4 B    --size-req 36   --size-rep 32\n"
        "  REGION_WRITE 4 KiB  --size-req 4128 --size-rep 32\n");
    exit(2);
}

static void serve(int sock, size_t req, size_t rep, int expect_fd)
{
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
        send_all(sock, out, rep, -1);
    }
    free(in);
    free(out);
}

int main(int argc, char **argv)
{
    long long req = -1, rep = -1, iters = 100000, warmup = -1, cpu = 0;
    int use_fd = 0, sv[2], memfd = -1, status;
    struct samples lat;
    char *in, *out;
    uint64_t t_start, t_end;
    pid_t child;
    long long i;

    prog_name = "pingpong";
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (!strcmp(a, "--fd")) {
            use_fd = 1;
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
        else
            usage();
    }
    if (use_fd) {
        if (req < 0)
            req = 16 + 32;
        if (rep < 0)
            rep = 16;
    }
    if (req < 0 || rep < 0)
        usage();
    if (warmup < 0)
        warmup = iters / 10 < 10000 ? iters / 10 : 10000;

    /* Before the fork, so the server inherits the same CPU. */
    pin_cpu((int)cpu);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        die("socketpair: %s", strerror(errno));
    if (use_fd) {
        memfd = memfd_create("pingpong-dma", MFD_CLOEXEC);
        if (memfd < 0 || ftruncate(memfd, 1 << 20) != 0)
            die("memfd: %s", strerror(errno));
    }

    child = fork();
    if (child < 0)
        die("fork: %s", strerror(errno));
    if (child == 0) {
        prog_name = "pingpong(server)";
        close(sv[0]);
        if (memfd >= 0)
            close(memfd);
        serve(sv[1], (size_t)req, (size_t)rep, use_fd);
        _exit(0);
    }
    close(sv[1]);

    in = malloc((size_t)rep);
    out = calloc(1, (size_t)req);
    if (!in || !out)
        die("out of memory");
    samples_init(&lat, (size_t)iters);

    for (i = 0; i < warmup; i++) {
        send_all(sv[0], out, (size_t)req, memfd);
        if (recv_some(sv[0], in, (size_t)rep, (size_t)rep, NULL) == 0)
            die("server closed the socket");
    }
    t_start = now_ns();
    for (i = 0; i < iters; i++) {
        uint64_t t0 = now_ns();

        send_all(sv[0], out, (size_t)req, memfd);
        if (recv_some(sv[0], in, (size_t)rep, (size_t)rep, NULL) == 0)
            die("server closed the socket");
        samples_add(&lat, now_ns() - t0);
    }
    t_end = now_ns();

    close(sv[0]); /* EOF ends the server loop */
    if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        die("server process failed");

    printf("{\"ops_per_s\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f,"
           "\"iters\":%lld,\"size_req\":%lld,\"size_rep\":%lld,\"fd\":%s}\n",
           (double)iters * 1e9 / (double)(t_end - t_start),
           samples_pct_us(&lat, 50), samples_pct_us(&lat, 99),
           iters, req, rep, use_fd ? "true" : "false");
    return 0;
}
