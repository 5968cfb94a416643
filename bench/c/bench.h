/*
 * Helpers shared by the C benchmark programs: timing, CPU pinning, exact
 * socket I/O (with optional SCM_RIGHTS), argument parsing and statistics.
 * Header-only so each program stays a single translation unit.
 */
#ifndef MUSER_BENCH_H
#define MUSER_BENCH_H

#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static const char *prog_name = "bench";

__attribute__((noreturn, format(printf, 1, 2)))
static void die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", prog_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static inline uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Waits until eventfd `efd` is readable (an interrupt), then drains it and
 * returns its count; 0 after `timeout_ms` with none, so a driver can say
 * where its queue stands instead of sleeping until the bench kills it.
 */
#define STALL_MS 15000
static uint64_t wait_irq(int efd, int timeout_ms)
{
    struct pollfd pfd = { .fd = efd, .events = POLLIN };
    uint64_t v;
    int n;

    do
        n = poll(&pfd, 1, timeout_ms);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        die("poll: %s", strerror(errno));
    if (n == 0)
        return 0;
    if (read(efd, &v, sizeof(v)) != sizeof(v))
        die("eventfd read: %s", strerror(errno));
    return v;
}

/* Pinning both ends to one CPU avoids cross-CPU wake-up costs on these VMs. */
static void pin_cpu(int cpu)
{
    cpu_set_t set;

    if (cpu < 0)
        return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        die("sched_setaffinity(cpu %d): %s", cpu, strerror(errno));
}

static long long parse_num(const char *opt, const char *s, long long min,
                           long long max)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 0);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        die("bad value for %s: '%s' (expected %lld..%lld)", opt, s, min, max);
    return v;
}

/* Write all of buf; passes fd (if >= 0) as SCM_RIGHTS with the first byte. */
static void send_all(int sock, const void *buf, size_t len, int fd)
{
    const char *p = buf;

    while (len > 0) {
        struct iovec iov = { .iov_base = (void *)p, .iov_len = len };
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(int))];
        } ctl;
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (fd >= 0) {
            struct cmsghdr *cm;

            memset(&ctl, 0, sizeof(ctl));
            mh.msg_control = ctl.buf;
            mh.msg_controllen = sizeof(ctl.buf);
            cm = CMSG_FIRSTHDR(&mh);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &fd, sizeof(int));
        }
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("send: %s", strerror(errno));
        }
        p += n;
        len -= (size_t)n;
        fd = -1; /* the fd travels once, with the first chunk */
    }
}

/* When set, recv_some never sleeps: it retries non-blocking reads (busy polling). */
static int recv_busy_poll;

/*
 * Receive into buf, returning after at least min bytes (at most max).
 * Any fds that arrive are stored in *fd_out (if given) or closed; -1 if none.
 * Returns 0 on orderly EOF before any byte arrived.
 */
static size_t recv_some(int sock, void *buf, size_t min, size_t max,
                        int *fd_out)
{
    char *p = buf;
    size_t got = 0;

    if (fd_out)
        *fd_out = -1;
    while (got < min) {
        struct iovec iov = { .iov_base = p + got, .iov_len = max - got };
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(int) * 4)];
        } ctl;
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1,
            .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
        };
        struct cmsghdr *cm;
        ssize_t n;

        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | (recv_busy_poll ? MSG_DONTWAIT : 0));
        if (n < 0) {
            if (errno == EINTR || (recv_busy_poll && errno == EAGAIN))
                continue;
            die("recv: %s", strerror(errno));
        }
        if (n == 0) {
            if (got == 0)
                return 0;
            die("peer closed the socket mid-message (%zu of %zu bytes)",
                got, min);
        }
        for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            int nfds, i, f;

            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                continue;
            nfds = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (i = 0; i < nfds; i++) {
                memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                if (fd_out && *fd_out < 0)
                    *fd_out = f;
                else
                    close(f);
            }
        }
        if (mh.msg_flags & MSG_CTRUNC)
            die("recv: control data truncated (too many fds)");
        got += (size_t)n;
    }
    return got;
}

/* Latency samples in nanoseconds; percentiles by sorting once at the end. */
struct samples {
    uint64_t *v;
    size_t n, cap;
};

static void samples_init(struct samples *s, size_t cap)
{
    s->v = malloc((cap ? cap : 1) * sizeof(*s->v));
    if (!s->v)
        die("out of memory for %zu samples", cap);
    s->n = 0;
    s->cap = cap;
}

static inline void samples_add(struct samples *s, uint64_t ns)
{
    if (s->n < s->cap)
        s->v[s->n++] = ns;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile in microseconds; sorts the samples in place. */
static double samples_pct_us(struct samples *s, double pct)
{
    size_t idx;

    if (s->n == 0)
        return 0.0;
    qsort(s->v, s->n, sizeof(*s->v), cmp_u64);
    idx = (size_t)(pct / 100.0 * (double)s->n + 0.999999);
    if (idx > 0)
        idx--;
    if (idx >= s->n)
        idx = s->n - 1;
    return (double)s->v[idx] / 1000.0;
}

#endif /* MUSER_BENCH_H */
