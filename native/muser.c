/*
 * muser native addon: only the kernel primitives Node.js lacks.
 *
 *  - AF_UNIX stream sockets: listen, accept, connect, socketpair;
 *  - sendmsg / recvmsg with SCM_RIGHTS, reads driven by uv_poll (or peeks,
 *    consumed afterwards: SO_PEEK_OFF and recvDiscard);
 *  - mmap of an fd as an ArrayBuffer that is detached before munmap, and
 *    revoking a shared mapping from under the views taken of it;
 *  - eventfd, memfd_create, ftruncate, close, dup, file seals;
 *  - fallocate on the thread pool (block backends), a block device's size;
 *  - pread / pwrite, for client memory that must not be mapped;
 *  - busy polling: an idle handle that keeps the loop from sleeping in
 *    epoll while a spinning poller saw activity within its idle window;
 *  - watched memory (watch.h): words of a shared mapping polled for
 *    writes by another process, on that idle handle and on a timer.
 *
 * All state is per instance (napi instance data), so the addon loads in
 * worker threads: each thread has its own receive buffer and spin handle.
 * The one exception: mappings made with a group are listed process-wide
 * (under a lock), so one thread can revoke another's.
 *
 * Every policy (framing, validation, fd ownership) lives in TypeScript.
 * Functions that can fail with an expected errno return -errno instead of
 * throwing, so the hot path never builds exception objects. Misuse does
 * throw: an argument of the wrong type (TypeError) or out of its C type's
 * range (RangeError), named in the message, and a handle of the wrong kind
 * (the argument checks are in args.h).
 */
#include <errno.h>
#include <linux/fs.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "args.h"

#define MAX_FDS_PER_MSG 253 /* SCM_MAX_FD */
#define RECV_BUF_SIZE (1 << 20)

#define CALL(env, call)                                                        \
    do {                                                                       \
        if ((call) != napi_ok) {                                               \
            napi_throw_error((env), NULL, "N-API call failed: " #call);        \
            return NULL;                                                       \
        }                                                                      \
    } while (0)

static napi_value make_int(napi_env env, int64_t v) {
    napi_value r;
    napi_create_int64(env, v, &r);
    return r;
}

static napi_value throw_errno(napi_env env, const char *what, int err) {
    char msg[256];
    char code[32];
    snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
    snprintf(code, sizeof code, "E%d", err);
    napi_value e, m, c, n;
    napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
    napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c);
    napi_create_error(env, c, m, &e);
    napi_create_int32(env, err, &n);
    napi_set_named_property(env, e, "errno", n);
    napi_throw(env, e);
    return NULL;
}

/* Where a socket is set up before it is published at `path`: a name of this
 * process in the same directory (link() needs the same filesystem). Returns 0
 * when it does not fit in sun_path; the socket is then bound at `path` itself. */
static int staging_path(const char *path, char *out, size_t size) {
    static unsigned counter;
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path + 1) : 0;
    unsigned n = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
    int len = snprintf(out, size, "%.*s.muser-%d-%u", dirlen, path, (int)getpid(), n);
    return len > 0 && (size_t)len < size;
}

/* listen(path, backlog, mode) -> fd. The socket appears at `path` only once it
 * listens, with its mode: bound, chmod'ed and listening under a staging name,
 * then hard-linked to `path` (which fails if anything is there: EADDRINUSE, as
 * bind would). A client that connects as soon as the path exists (libvfio-user's
 * sample client polls stat() and connects at once) is never refused, and no
 * client can connect while the socket is more open than requested. */
static napi_value js_listen(napi_env env, napi_callback_info info) {
    struct sockaddr_un sa, staged;
    ARGS(3, "listen");
    int rc = arg_path(env, FN, argv[0], &sa);
    if (rc > 0) return NULL;
    ARG_INT(int, backlog, 1, "backlog", 0, INT32_MAX, NULL);
    ARG_INT(mode_t, mode, 2, "mode", 0, 0777, "an integer in 0..0o777");
    if (rc < 0) return throw_errno(env, "listen", -rc);
    staged = sa;
    int staging = staging_path(sa.sun_path, staged.sun_path, sizeof staged.sun_path - 1);
    struct sockaddr_un *at = staging ? &staged : &sa;
    if (staging) unlink(staged.sun_path); /* left by a dead process that had our pid */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return throw_errno(env, "socket", errno);
    if (bind(fd, (struct sockaddr *)at, sizeof *at) < 0) {
        int e = errno;
        close(fd);
        return throw_errno(env, "bind", e);
    }
    if (chmod(at->sun_path, mode) < 0 || listen(fd, backlog) < 0) {
        int e = errno;
        close(fd);
        unlink(at->sun_path);
        return throw_errno(env, "listen", e);
    }
    if (staging) {
        /* A filesystem without hard links: rename, which would replace a file
         * created at `path` since the caller checked it. */
        int published = link(staged.sun_path, sa.sun_path) == 0 ||
                        (errno != EEXIST && rename(staged.sun_path, sa.sun_path) == 0);
        int e = errno == EEXIST ? EADDRINUSE : errno;
        unlink(staged.sun_path);
        if (!published) {
            close(fd);
            return throw_errno(env, "bind", e);
        }
    }
    return make_int(env, fd);
}

/* accept(fd) -> new fd, or -errno (-EAGAIN when nobody waits). */
static napi_value js_accept(napi_env env, napi_callback_info info) {
    ARGS(1, "accept");
    ARG_FD(lfd, 0);
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return make_int(env, fd < 0 ? -errno : fd);
}

/* connect(path) -> non-blocking fd, or -errno; throws only for a bad path.
 * Never blocks: a listener whose backlog is full gives -EAGAIN (AF_UNIX
 * never answers EINPROGRESS), and the caller retries until its deadline. */
static napi_value js_connect(napi_env env, napi_callback_info info) {
    struct sockaddr_un sa;
    ARGS(1, "connect");
    int rc = arg_path(env, FN, argv[0], &sa);
    if (rc > 0) return NULL;
    if (rc < 0) return throw_errno(env, "connect", -rc);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return make_int(env, -errno);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(fd);
        return make_int(env, -e);
    }
    return make_int(env, fd);
}

static napi_value js_socketpair(napi_env env, napi_callback_info info) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return throw_errno(env, "socketpair", errno);
    napi_value arr;
    CALL(env, napi_create_array_with_length(env, 2, &arr));
    napi_set_element(env, arr, 0, make_int(env, sv[0]));
    napi_set_element(env, arr, 1, make_int(env, sv[1]));
    return arr;
}

/* sendmsg(fd, data: Buffer | Buffer[], fds?: number[]) -> bytes sent or -errno. */
#define MAX_IOV 64
static napi_value js_sendmsg(napi_env env, napi_callback_info info) {
    struct iovec iov[MAX_IOV];
    int fds[MAX_FDS_PER_MSG];
    size_t niov = 0;
    uint32_t nfds = 0;
    bool is_array = false;
    ARGS(3, "sendmsg");
    ARG_FD(fd, 0);
    napi_is_array(env, argv[1], &is_array);
    if (is_array) {
        uint32_t n = 0;
        if (!arg_array(env, FN, "data", argv[1], MAX_IOV, "a Buffer or an array of Buffers", &n)) return NULL;
        for (uint32_t i = 0; i < n; i++) {
            napi_value b;
            CALL(env, napi_get_element(env, argv[1], i, &b));
            if (!arg_buffer(env, FN, "data", (int)i, b, &iov[niov].iov_base, &iov[niov].iov_len)) return NULL;
            niov++;
        }
    } else {
        if (!arg_buffer(env, FN, "data", -1, argv[1], &iov[0].iov_base, &iov[0].iov_len)) return NULL;
        niov = 1;
    }
    if (!is_undefined(env, argv[2])) {
        if (!arg_array(env, FN, "fds", argv[2], MAX_FDS_PER_MSG, "an array of fds or undefined", &nfds)) return NULL;
        for (uint32_t i = 0; i < nfds; i++) {
            napi_value v;
            int64_t f = 0;
            CALL(env, napi_get_element(env, argv[2], i, &v));
            if (!arg_int(env, FN, "fds", (int)i, v, INT32_MIN, INT32_MAX, "a 32-bit integer", &f)) return NULL;
            fds[i] = (int)f;
        }
    }
    char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_MSG)];
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = niov};
    if (nfds > 0) {
        memset(cbuf, 0, CMSG_SPACE(sizeof(int) * nfds));
        mh.msg_control = cbuf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t n;
    do n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return make_int(env, n < 0 ? -errno : n);
}

/* ------------------------------------------------------------------ poller */

/* MODE_STREAM_PEEK: as MODE_STREAM, but reads with MSG_PEEK: the bytes stay
 * in the socket until the callback consumes them (recvDiscard). With
 * SO_PEEK_OFF set, each peek returns the bytes after the previous one; fds
 * that came with the bytes are fresh copies (the socket keeps its own). */
enum { MODE_STREAM = 0, MODE_EVENTFD = 1, MODE_READABLE = 2, MODE_STREAM_PEEK = 3 };
enum { EV_DATA = 0, EV_EOF = 1, EV_ERROR = 2, EV_WRITABLE = 3, EV_COUNT = 4, EV_READABLE = 5 };

typedef struct poller poller_t;
typedef struct watch watch_t;

/* Per-instance (per-thread) state. */
typedef struct {
    uint8_t *recv_buf;
    /* Live pollers of this thread, closed when its environment goes away
     * (a worker thread ending with a doorbell still watched). */
    poller_t *pollers;
    /* While tearing down: handles whose close has not completed yet. */
    int closing_handles;
    /* Busy polling: while `spinning`, an active idle handle makes libuv poll
     * with a zero timeout, so the loop never sleeps; it stops once
     * uv_hrtime() passes spin_until (no activity for an idle window). */
    uv_idle_t spin;
    bool spin_init;
    bool spinning;
    uint64_t spin_until;
    uint64_t spin_starts; /* times the loop went from sleeping to spinning */
    uint64_t spin_direct_events; /* events read by spin_direct rather than by epoll */
    /* Watched memory (watch.h): scanned on every spin and on this timer. */
    watch_t *watches;
    uv_timer_t watch_timer;
    bool watch_timer_init;
    uint64_t watch_interval_ms; /* the timer's period; 0 while stopped */
    int scanning;               /* > 0 while a scan runs (stopped watches are unlinked after it) */
    napi_async_cleanup_hook_handle cleanup;
} instance_t;

struct poller {
    uv_poll_t handle;
    /* Freed when both the uv handle has closed and the JS handle (an
     * external) was collected: a stale JS handle never points at freed memory. */
    int refs;
    instance_t *inst;
    poller_t *prev, *next;
    uint64_t spin_ns; /* 0: this poller never makes the loop spin */
    bool direct;      /* while spinning, read it from the idle handle (spin_direct) */
    napi_env env;
    napi_ref callback;
    napi_ref self;
    int fd;
    int mode;
    int events;
    bool closing;
    /* Optional caller-owned receive buffer: data events then carry only a
     * length, sparing an allocation per message. */
    napi_ref user_buf_ref;
    uint8_t *user_buf;
    size_t user_buf_len;
};

static void instance_handle_closed(instance_t *inst);
static void watches_scan(instance_t *inst);
static int watches_scan_count(instance_t *inst);
static int spin_direct(instance_t *inst);

static void spin_cb(uv_idle_t *h) {
    instance_t *inst = h->data;
    /* A change seen here re-arms the window (see watch.h). */
    if (spin_direct(inst) < 0 && inst->watches) watches_scan(inst);
    if (uv_hrtime() >= inst->spin_until) {
        uv_idle_stop(h);
        inst->spinning = false;
    }
}

/* Activity on a spinning poller: keep the loop awake for another window. */
static void spin_arm(instance_t *inst, uint64_t window_ns) {
    uint64_t until = uv_hrtime() + window_ns;
    if (until > inst->spin_until) inst->spin_until = until;
    if (!inst->spinning && inst->spin_init) {
        inst->spinning = true;
        inst->spin_starts++;
        uv_idle_start(&inst->spin, spin_cb);
    }
}

static void poller_emit(poller_t *p, int kind, napi_value a, napi_value b) {
    napi_env env = p->env;
    napi_value cb, global, argv[3];
    napi_get_reference_value(env, p->callback, &cb);
    napi_get_global(env, &global);
    argv[0] = make_int(env, kind);
    argv[1] = a;
    argv[2] = b;
    if (!argv[1]) napi_get_undefined(env, &argv[1]);
    if (!argv[2]) napi_get_undefined(env, &argv[2]);
    napi_status s = napi_make_callback(env, NULL, global, cb, 3, argv, NULL);
    if (s == napi_pending_exception) {
        napi_value ex;
        napi_get_and_clear_last_exception(env, &ex);
        napi_fatal_exception(env, ex);
    }
}

static void close_fds(int *fds, int n) {
    for (int i = 0; i < n; i++) close(fds[i]);
}

/* One recvmsg into the shared buffer; returns bytes, 0 on EOF, -errno.
 * -EPROTO: the kernel truncated the message's fds (MSG_CTRUNC, e.g. this
 * process is at its fd limit): the message cannot be handled without them
 * and its bytes are gone from the stream, so the fds that did arrive are
 * closed and the connection is to be treated as broken. */
static ssize_t recv_chunk(int fd, uint8_t *buf, size_t len, int *fds, int *nfds, int flags) {
    char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_MSG)];
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    ssize_t n;
    *nfds = 0;
    do n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT | flags);
    while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (int i = 0; i < k; i++) {
            int f;
            memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
            if (*nfds < MAX_FDS_PER_MSG) fds[(*nfds)++] = f;
            else close(f);
        }
    }
    if (mh.msg_flags & MSG_CTRUNC) {
        close_fds(fds, *nfds);
        *nfds = 0;
        return -EPROTO;
    }
    if (n == 0) {
        close_fds(fds, *nfds); /* fds with EOF belong to no message */
        *nfds = 0;
    }
    return n;
}

/* Reads what is there; returns the number of events emitted (0: nothing to read). */
static int poller_read_stream(poller_t *p) {
    int fds[MAX_FDS_PER_MSG], nfds, emitted = 0;
    /* Level-triggered: a short read means the queue is empty for now, so
     * stop without paying for an EAGAIN; otherwise loop a bounded number of times. */
    /* The buffer is looked up every round: a callback may have swapped it
     * (pollSetBuffer) or paused reading (pollPause, backpressure). */
    for (int round = 0; round < 16 && !p->closing && (p->events & UV_READABLE); round++) {
        uint8_t *recv_buf = p->inst->recv_buf;
        uint8_t *buf = p->user_buf ? p->user_buf : recv_buf;
        size_t len = p->user_buf ? p->user_buf_len : RECV_BUF_SIZE;
        ssize_t n = recv_chunk(p->fd, buf, len, fds, &nfds, p->mode == MODE_STREAM_PEEK ? MSG_PEEK : 0);
        if (n == -EAGAIN || n == -EWOULDBLOCK) return emitted;
        emitted++;
        napi_handle_scope scope;
        napi_open_handle_scope(p->env, &scope);
        if (n == -EPROTO) {
            napi_value why;
            napi_create_string_utf8(p->env,
                                    "fds sent with a message were dropped by the kernel (MSG_CTRUNC: is the fd limit "
                                    "reached?); those that arrived were closed and the message is lost",
                                    NAPI_AUTO_LENGTH, &why);
            poller_emit(p, EV_ERROR, make_int(p->env, EPROTO), why);
        } else if (n < 0) {
            poller_emit(p, EV_ERROR, make_int(p->env, -n), NULL);
        } else if (n == 0) {
            poller_emit(p, EV_EOF, NULL, NULL);
        } else {
            napi_value data_arg, fdarr = NULL;
            void *data;
            if (p->user_buf) data_arg = make_int(p->env, n);
            else napi_create_buffer_copy(p->env, n, recv_buf, &data, &data_arg);
            if (nfds > 0) {
                napi_create_array_with_length(p->env, nfds, &fdarr);
                for (int i = 0; i < nfds; i++) napi_set_element(p->env, fdarr, i, make_int(p->env, fds[i]));
            }
            poller_emit(p, EV_DATA, data_arg, fdarr);
        }
        napi_close_handle_scope(p->env, scope);
        if (n <= 0 || (size_t)n < len) return emitted;
    }
    return emitted;
}

/* Returns 1 when it read a count (and emitted it), else 0. */
static int poller_read_eventfd(poller_t *p) {
    uint64_t v;
    ssize_t n = read(p->fd, &v, sizeof v);
    if (n != sizeof v) return 0;
    napi_handle_scope scope;
    napi_open_handle_scope(p->env, &scope);
    napi_value count;
    napi_create_double(p->env, (double)v, &count);
    poller_emit(p, EV_COUNT, count, NULL);
    napi_close_handle_scope(p->env, scope);
    return 1;
}

/* While the loop busy-polls, each turn goes through every libuv phase
 * (timers, Node's check handles, an epoll_pwait) before it sees a message:
 * a couple of microseconds in which a blocked client falls asleep. So the
 * idle handle reads the spinning pollers' fds itself (a non-blocking
 * recvmsg or eventfd read each) and scans the watches, again and again,
 * until something arrives, SPIN_DIRECT_NS pass or the window closes; then
 * the loop turns as before, so timers and fds that do not spin wait at
 * most SPIN_DIRECT_NS more. Only with a few such pollers: each costs a
 * system call per look, where epoll looks at all of them at once.
 * Returns the events seen, or -1 when there is no poller to read. */
#define SPIN_DIRECT_NS 10000
#define SPIN_DIRECT_MAX 4

static int spin_direct(instance_t *inst) {
    poller_t *ps[SPIN_DIRECT_MAX];
    int n = 0;
    for (poller_t *p = inst->pollers; p; p = p->next) {
        if (!p->spin_ns || !p->direct || p->closing || !(p->events & UV_READABLE)) continue;
        if (n == SPIN_DIRECT_MAX) return -1;
        ps[n++] = p;
    }
    if (n == 0) return -1;
    /* A poller stopped by a callback here is only closed by a later phase
     * of the loop (uv_close), so the pointers stay valid. */
    uint64_t start = uv_hrtime();
    for (;;) {
        int seen = 0;
        for (int i = 0; i < n; i++) {
            poller_t *p = ps[i];
            if (p->closing || !(p->events & UV_READABLE)) continue;
            int got = p->mode == MODE_STREAM ? poller_read_stream(p) : poller_read_eventfd(p);
            if (got) spin_arm(inst, p->spin_ns);
            seen += got;
        }
        inst->spin_direct_events += seen;
        if (inst->watches) seen += watches_scan_count(inst);
        if (seen) return seen;
        uint64_t now = uv_hrtime();
        if (now - start >= SPIN_DIRECT_NS || now >= inst->spin_until) return 0;
    }
}

static void poller_cb(uv_poll_t *h, int status, int events) {
    poller_t *p = (poller_t *)h->data;
    if (p->closing) return;
    if (p->spin_ns) spin_arm(p->inst, p->spin_ns);
    if (status < 0) {
        napi_handle_scope scope;
        napi_open_handle_scope(p->env, &scope);
        poller_emit(p, EV_ERROR, make_int(p->env, -status), NULL);
        napi_close_handle_scope(p->env, scope);
        return;
    }
    if (events & UV_WRITABLE) {
        napi_handle_scope scope;
        napi_open_handle_scope(p->env, &scope);
        poller_emit(p, EV_WRITABLE, NULL, NULL);
        napi_close_handle_scope(p->env, scope);
    }
    if ((events & (UV_READABLE | UV_DISCONNECT)) && !p->closing) {
        if (p->mode == MODE_STREAM || p->mode == MODE_STREAM_PEEK) poller_read_stream(p);
        else if (p->mode == MODE_EVENTFD) poller_read_eventfd(p);
        else {
            napi_handle_scope scope;
            napi_open_handle_scope(p->env, &scope);
            poller_emit(p, EV_READABLE, NULL, NULL);
            napi_close_handle_scope(p->env, scope);
        }
    }
}

static void poller_release(poller_t *p) {
    if (--p->refs == 0) free(p);
}

static void poller_closed(uv_handle_t *h) {
    poller_t *p = (poller_t *)h->data;
    instance_t *inst = p->inst;
    if (p->prev) p->prev->next = p->next;
    else inst->pollers = p->next;
    if (p->next) p->next->prev = p->prev;
    if (p->callback) napi_delete_reference(p->env, p->callback);
    if (p->self) napi_delete_reference(p->env, p->self);
    if (p->user_buf_ref) napi_delete_reference(p->env, p->user_buf_ref);
    p->callback = p->self = p->user_buf_ref = NULL;
    p->user_buf = NULL;
    poller_release(p);
    if (inst->closing_handles > 0) instance_handle_closed(inst);
}

static void poller_handle_finalize(napi_env env, void *data, void *hint) { poller_release(data); }

/* Handles are externals tagged with their kind, so a mapping handle (or any
 * other value) given where a poller handle belongs throws instead of being
 * read as one. */
static const napi_type_tag POLLER_TAG = {0x6d75736572706f6cULL, 0x6c65722d68616e64ULL};
static const napi_type_tag MAPPING_TAG = {0x6d757365726d6170ULL, 0x70696e672d68616eULL};

static bool arg_handle(napi_env env, const char *fn, napi_value v, const napi_type_tag *tag, const char *want, void **out) {
    bool ok = false;
    if (napi_check_object_type_tag(env, v, tag, &ok) == napi_ok && ok && napi_get_value_external(env, v, out) == napi_ok)
        return true;
    /* napi_check_object_type_tag may have thrown for a non-object */
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
        napi_value ignored;
        napi_get_and_clear_last_exception(env, &ignored);
    }
    return throw_arg(env, false, fn, "handle", -1, want, v);
}

#define ARG_POLLER(var, i)                                                         poller_t *var = NULL;                                                          if (!arg_handle(env, FN, argv[i], &POLLER_TAG, "a poller handle (from pollStart)", (void **)&var)) return NULL

/* Watches p->events (non-zero); on failure leaves the poller as it was and throws. */
static bool poller_watch(napi_env env, poller_t *p, int events, const char *fn) {
    int rc = uv_poll_start(&p->handle, events, poller_cb);
    if (rc < 0) {
        char what[64];
        snprintf(what, sizeof what, "%s: uv_poll_start", fn);
        throw_errno(env, what, -rc);
        return false;
    }
    p->events = events;
    return true;
}

/* Watches `events`, or stops watching when there are none (libuv refuses 0 events). */
static bool poller_set_events(napi_env env, poller_t *p, int events, const char *fn) {
    if (events) return poller_watch(env, p, events, fn);
    uv_poll_stop(&p->handle);
    p->events = 0;
    return true;
}

/* pollStart(fd, mode, callback, recvBuffer?) -> handle. The callback receives
 * (kind, a, b): DATA(buffer, fds?) - or DATA(length, fds?) when the data
 * landed in recvBuffer - EOF, ERROR(errno, reason?), WRITABLE, COUNT(n) for
 * eventfds, READABLE for raw fds. The fd is not owned; one poller per fd. */
static napi_value js_poll_start(napi_env env, napi_callback_info info) {
    napi_value ext;
    napi_valuetype t = napi_undefined;
    void *buf_data = NULL;
    size_t buf_len = 0;
    instance_t *inst = NULL;
    ARGS(4, "pollStart");
    ARG_FD(fd, 0);
    ARG_INT(int, mode, 1, "mode", MODE_STREAM, MODE_STREAM_PEEK, "a PollMode (0..3)");
    if (napi_typeof(env, argv[2], &t) != napi_ok || t != napi_function)
        return throw_arg(env, false, FN, "callback", -1, "a function", argv[2]), NULL;
    if (!is_undefined(env, argv[3])) {
        if (!arg_buffer(env, FN, "recvBuffer", -1, argv[3], &buf_data, &buf_len)) return NULL;
        if (buf_len == 0) return throw_arg(env, true, FN, "recvBuffer.length", -1, "at least 1", make_int(env, 0)), NULL;
    }
    uv_loop_t *loop;
    CALL(env, napi_get_uv_event_loop(env, &loop));
    if (napi_get_instance_data(env, (void **)&inst) != napi_ok || !inst)
        return throw_errno(env, "pollStart: addon not initialised", EINVAL);
    /* A second uv_poll_t on the fd would fail to start, and probing it
     * (uv_poll_init) would take the first one's fd out of epoll. */
    for (poller_t *q = inst->pollers; q; q = q->next)
        if (q->fd == fd && !q->closing) return throw_errno(env, "pollStart: fd already watched by another poller", EEXIST);
    poller_t *p = calloc(1, sizeof *p);
    if (!p) return throw_errno(env, "pollStart", ENOMEM);
    p->env = env;
    p->inst = inst;
    p->fd = fd;
    p->mode = mode;
    int rc = uv_poll_init(loop, &p->handle, p->fd);
    if (rc < 0) {
        free(p);
        return throw_errno(env, "uv_poll_init", -rc);
    }
    p->handle.data = p;
    p->refs = 1; /* the uv handle, until poller_closed */
    p->next = inst->pollers;
    if (p->next) p->next->prev = p;
    inst->pollers = p;
    const char *failed = NULL;
    if (napi_create_reference(env, argv[2], 1, &p->callback) != napi_ok) failed = "napi_create_reference";
    else if (buf_data && napi_create_reference(env, argv[3], 1, &p->user_buf_ref) != napi_ok) failed = "napi_create_reference";
    else if (napi_create_external(env, p, poller_handle_finalize, NULL, &ext) != napi_ok) failed = "napi_create_external";
    else {
        p->refs++; /* the JS handle, until collected */
        if (napi_type_tag_object(env, ext, &POLLER_TAG) != napi_ok) failed = "napi_type_tag_object";
        else if (napi_create_reference(env, ext, 1, &p->self) != napi_ok) failed = "napi_create_reference";
    }
    if (buf_data) {
        p->user_buf = buf_data;
        p->user_buf_len = buf_len;
    }
    if (failed || !poller_watch(env, p, UV_READABLE | UV_DISCONNECT, FN)) {
        p->closing = true;
        uv_close((uv_handle_t *)&p->handle, poller_closed);
        if (failed) return throw_errno(env, failed, ENOMEM);
        return NULL;
    }
    return ext;
}

/* pollWritable(handle, on): also wake when the fd becomes writable. */
static napi_value js_poll_writable(napi_env env, napi_callback_info info) {
    ARGS(2, "pollWritable");
    ARG_POLLER(p, 0);
    ARG_BOOL(on, 1, "on", false);
    if (p->closing) return NULL;
    /* Reading may be paused: then nothing may be left to watch. */
    poller_set_events(env, p, on ? (p->events | UV_WRITABLE) : (p->events & ~UV_WRITABLE), FN);
    return NULL;
}

/* pollPause(handle, paused): stop or resume read wakeups (backpressure). */
static napi_value js_poll_pause(napi_env env, napi_callback_info info) {
    ARGS(2, "pollPause");
    ARG_POLLER(p, 0);
    ARG_BOOL(paused, 1, "paused", false);
    if (p->closing) return NULL;
    poller_set_events(env, p, paused ? (p->events & UV_WRITABLE) : (p->events | UV_READABLE | UV_DISCONNECT), FN);
    return NULL;
}

/* pollSetBuffer(handle, buffer): later reads land in `buffer` instead of
 * the one given to pollStart (the old one may still be in use in JS). */
static napi_value js_poll_set_buffer(napi_env env, napi_callback_info info) {
    void *data;
    size_t len;
    ARGS(2, "pollSetBuffer");
    ARG_POLLER(p, 0);
    if (!arg_buffer(env, FN, "buffer", -1, argv[1], &data, &len)) return NULL;
    if (len == 0) return throw_arg(env, true, FN, "buffer.length", -1, "at least 1", make_int(env, 0)), NULL;
    if (p->closing || !p->user_buf) return throw_errno(env, "pollSetBuffer: a stopped poller, or one started without a recvBuffer", EINVAL);
    napi_ref ref;
    if (napi_create_reference(env, argv[1], 1, &ref) != napi_ok) return throw_errno(env, "pollSetBuffer", ENOMEM);
    napi_delete_reference(env, p->user_buf_ref);
    p->user_buf_ref = ref;
    p->user_buf = data;
    p->user_buf_len = len;
    return NULL;
}

/* pollSpin(handle, idleNs): with idleNs > 0, activity on this poller keeps
 * the event loop busy-polling (no sleep in epoll) until idleNs pass without
 * any; 0 turns it off. Arms the window at once, so a fresh connection is
 * polled from its first message. */
static napi_value js_poll_spin(napi_env env, napi_callback_info info) {
    ARGS(2, "pollSpin");
    ARG_POLLER(p, 0);
    ARG_INT(uint64_t, ns, 1, "idleNs", 0, MAX_SAFE_INT, "an integer >= 0");
    if (p->closing) return NULL;
    p->spin_ns = ns;
    /* Read directly only what never blocks: recvmsg is MSG_DONTWAIT; an
     * eventfd is O_NONBLOCK since uv_poll_init, unless someone cleared it. */
    p->direct = p->mode == MODE_STREAM || (p->mode == MODE_EVENTFD && (fcntl(p->fd, F_GETFL) & O_NONBLOCK));
    if (p->spin_ns) spin_arm(p->inst, p->spin_ns);
    return NULL;
}

/* spinState() -> [spinning (0/1), times the loop started spinning, events
 * the spinning loop read itself (spin_direct) rather than through epoll]. */
static napi_value js_spin_state(napi_env env, napi_callback_info info) {
    instance_t *inst = NULL;
    napi_value arr;
    napi_get_instance_data(env, (void **)&inst);
    CALL(env, napi_create_array_with_length(env, 3, &arr));
    napi_set_element(env, arr, 0, make_int(env, inst && inst->spinning ? 1 : 0));
    napi_set_element(env, arr, 1, make_int(env, inst ? (int64_t)inst->spin_starts : 0));
    napi_set_element(env, arr, 2, make_int(env, inst ? (int64_t)inst->spin_direct_events : 0));
    return arr;
}

/* pollStop(handle): stop watching; the fd stays open (its owner closes it). */
static napi_value js_poll_stop(napi_env env, napi_callback_info info) {
    ARGS(1, "pollStop");
    ARG_POLLER(p, 0);
    if (p->closing) return NULL;
    p->closing = true;
    uv_poll_stop(&p->handle);
    uv_close((uv_handle_t *)&p->handle, poller_closed);
    return NULL;
}

/* recvDiscard(fd, length) -> bytes consumed (= length), fewer when the
 * socket ran dry or hit EOF first, or -errno when nothing was consumed.
 * Consumes bytes a MODE_STREAM_PEEK poller already handed over: they are
 * read into scratch memory (the thread's receive buffer) and dropped, and the fds that come with them
 * (the originals; the peek gave copies) are closed. A read stops after
 * bytes that carry fds, hence the loop. */
static napi_value js_recv_discard(napi_env env, napi_callback_info info) {
    ARGS(2, "recvDiscard");
    ARG_FD(fd, 0);
    ARG_INT(int64_t, length, 1, "length", 0, INT32_MAX, "an integer in 0..2^31-1");
    instance_t *inst = NULL;
    if (napi_get_instance_data(env, (void **)&inst) != napi_ok || !inst)
        return throw_errno(env, "recvDiscard: addon not initialised", EINVAL);
    /* The thread's receive buffer is free while JS runs (pollers copy out of
     * it before calling back), and large enough for a whole read at once. */
    uint8_t *scratch = inst->recv_buf;
    char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_MSG)];
    int64_t done = 0;
    while (done < length) {
        size_t want = (size_t)(length - done) < RECV_BUF_SIZE ? (size_t)(length - done) : RECV_BUF_SIZE;
        struct iovec iov = {.iov_base = scratch, .iov_len = want};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
        ssize_t n;
        do n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n < 0 && done == 0) return make_int(env, -errno);
        /* Whatever fds arrived (even truncated: the bytes are consumed all the same) are dropped. */
        if (n >= 0)
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                    int f;
                    memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
                    close(f);
                }
            }
        if (n <= 0) break;
        done += n;
    }
    return make_int(env, done);
}

/* peekOffset(fd) -> the socket's SO_PEEK_OFF: >= 0, -1 while peeking has no
 * offset (the default), or -errno (EPERM cannot occur, so -1 is unambiguous). */
static napi_value js_peek_offset(napi_env env, napi_callback_info info) {
    ARGS(1, "peekOffset");
    ARG_FD(fd, 0);
    int off = 0;
    socklen_t len = sizeof off;
    if (getsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, &len) < 0) return make_int(env, -errno);
    return make_int(env, off);
}

/* setPeekOffset(fd, offset) -> 0 or -errno: SO_PEEK_OFF (-1 turns it off). */
static napi_value js_set_peek_offset(napi_env env, napi_callback_info info) {
    ARGS(2, "setPeekOffset");
    ARG_FD(fd, 0);
    ARG_INT(int, off, 1, "offset", -1, INT32_MAX, "an integer in -1..2^31-1");
    return make_int(env, setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof off) < 0 ? -errno : 0);
}

/* ------------------------------------------------------------------ mmap */

typedef struct mapping {
    void *addr;
    size_t len;
    int refs;     /* the ArrayBuffer's backing store and the JS handle */
    bool mapped;
    bool revoked;
    int watchers; /* watches reading it (watch.h): munmap refuses with EBUSY meanwhile */
    int32_t group; /* 0, or the group revokeGroup() takes it away with */
    struct mapping *next;
} mapping_t;

/* Mappings made with a group, process-wide (every thread's instance):
 * mmapRevokeGroup() reaches them from another thread. While a mapping is
 * listed here, it is unmapped only under the lock, so a revoke never lands
 * on addresses already given back (and maybe mapped again by someone). */
static pthread_mutex_t groups_lock = PTHREAD_MUTEX_INITIALIZER;
static mapping_t *grouped;

static void mapping_unmap(mapping_t *m) {
    if (m->group) pthread_mutex_lock(&groups_lock);
    if (m->mapped) munmap(m->addr, m->len);
    m->mapped = false;
    if (m->group) pthread_mutex_unlock(&groups_lock);
}

static void mapping_release(mapping_t *m) {
    if (--m->refs > 0) return;
    if (m->group) {
        pthread_mutex_lock(&groups_lock);
        for (mapping_t **p = &grouped; *p; p = &(*p)->next) {
            if (*p == m) {
                *p = m->next;
                break;
            }
        }
        pthread_mutex_unlock(&groups_lock);
    }
    if (m->mapped) munmap(m->addr, m->len);
    free(m);
}

static void mapping_buffer_finalize(napi_env env, void *data, void *hint) { mapping_release(hint); }
static void mapping_handle_finalize(napi_env env, void *data, void *hint) { mapping_release(data); }

/* [ArrayBuffer, handle] over a mapping of `len` bytes at `addr`; unmaps it on failure. */
static napi_value wrap_mapping(napi_env env, void *addr, size_t len, int32_t group) {
    napi_value ab, handle, arr;
    mapping_t *m = calloc(1, sizeof *m);
    if (!m) {
        munmap(addr, len);
        return make_int(env, -ENOMEM);
    }
    m->addr = addr;
    m->len = len;
    m->refs = 2;
    m->mapped = true;
    if (napi_create_external_arraybuffer(env, addr, m->len, mapping_buffer_finalize, m, &ab) != napi_ok) {
        munmap(addr, m->len);
        free(m);
        return throw_errno(env, "mmap: external ArrayBuffer refused", ENOTSUP);
    }
    /* From here the ArrayBuffer's finalizer owns one reference. */
    if (napi_create_external(env, m, mapping_handle_finalize, NULL, &handle) != napi_ok) {
        mapping_release(m);
        return throw_errno(env, "mmap: napi_create_external", ENOMEM);
    }
    if (group != 0) {
        pthread_mutex_lock(&groups_lock);
        m->group = group;
        m->next = grouped;
        grouped = m;
        pthread_mutex_unlock(&groups_lock);
    }
    CALL(env, napi_type_tag_object(env, handle, &MAPPING_TAG));
    CALL(env, napi_create_array_with_length(env, 2, &arr));
    CALL(env, napi_set_element(env, arr, 0, ab));
    CALL(env, napi_set_element(env, arr, 1, handle));
    return arr;
}

/* Private anonymous memory over [addr, addr+len), in one step. */
static bool scratch_over(void *addr, size_t len) {
    return mmap(addr, len, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) != MAP_FAILED;
}

/* mmap(fd, offset, length, shared, group?) -> [ArrayBuffer, handle] or -errno.
 * shared: MAP_SHARED, writes reach the peer. Otherwise MAP_PRIVATE
 * copy-on-write, for memory the peer granted read-only: a stray write
 * through a view then lands in a private copy instead of faulting.
 * group (non-zero): mmapRevokeGroup(group) can revoke it from any thread. */
static napi_value js_mmap(napi_env env, napi_callback_info info) {
    ARGS(5, "mmap");
    ARG_FD(fd, 0);
    ARG_I64(off, 1, "offset");
    ARG_I64(len, 2, "length");
    ARG_BOOL(shared, 3, "shared", false);
    int32_t group = 0;
    if (!is_undefined(env, argv[4])) {
        ARG_INT(int32_t, g, 4, "group", 0, INT32_MAX, "an integer in 0..2^31-1");
        group = g;
    }
    if (off < 0 || len <= 0) return make_int(env, -EINVAL);
    void *addr = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, shared ? MAP_SHARED : MAP_PRIVATE, fd, (off_t)off);
    if (addr == MAP_FAILED) return make_int(env, -errno);
    return wrap_mapping(env, addr, (size_t)len, group);
}

/* mmapRevoke(handle) -> [ArrayBuffer, handle] or -errno.
 * Takes a shared mapping's pages out from under every view taken of it so
 * far: the same pages get a new address (returned, with its own handle;
 * mremap with old size 0 duplicates a shared mapping), then the old
 * addresses are replaced in one step, with no hole, by private anonymous
 * memory. A copy still writing through an old view (a read on the thread
 * pool) lands there from then on, never in the shared pages. The old
 * handle keeps the replacement and frees it on munmap. EINVAL for private
 * or unmapped mappings. */
static napi_value js_mmap_revoke(napi_env env, napi_callback_info info) {
    mapping_t *m = NULL;
    ARGS(1, "mmapRevoke");
    if (!arg_handle(env, FN, argv[0], &MAPPING_TAG, "a mapping handle (from mmap)", (void **)&m)) return NULL;
    if (!m->mapped) return make_int(env, -EINVAL);
    void *fresh = mremap(m->addr, 0, m->len, MREMAP_MAYMOVE);
    if (fresh == MAP_FAILED) return make_int(env, -errno);
    if (!scratch_over(m->addr, m->len)) {
        int e = errno;
        munmap(fresh, m->len);
        return make_int(env, -e);
    }
    m->revoked = true;
    return wrap_mapping(env, fresh, m->len, m->group);
}

/* mmapReplace(handle, fd) -> 0 or -errno.
 * Maps `fd` (shared, from offset 0) over the mapping's addresses in one
 * step (MAP_FIXED: no hole), so every view taken of the mapping reads and
 * writes fd's bytes from now on, and the old pages are dropped. For a
 * successor process taking over memory a peer already mapped (an isolated
 * device's region memfd). EINVAL when the mapping is unmapped or revoked,
 * or fd is shorter than the mapping (its accesses would fault). */
static napi_value js_mmap_replace(napi_env env, napi_callback_info info) {
    mapping_t *m = NULL;
    struct stat st;
    ARGS(2, "mmapReplace");
    if (!arg_handle(env, FN, argv[0], &MAPPING_TAG, "a mapping handle (from mmap)", (void **)&m)) return NULL;
    ARG_FD(fd, 1);
    if (!m->mapped || m->revoked) return make_int(env, -EINVAL);
    if (fstat(fd, &st) < 0) return make_int(env, -errno);
    if ((uint64_t)st.st_size < m->len) return make_int(env, -EINVAL);
    if (m->group) pthread_mutex_lock(&groups_lock);
    void *addr = mmap(m->addr, m->len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    int e = addr == MAP_FAILED ? errno : 0;
    if (m->group) pthread_mutex_unlock(&groups_lock);
    return make_int(env, e ? -e : 0);
}

/* mmapRevokeGroup(group) -> mappings revoked, or -errno (the first failure).
 * Puts private anonymous memory over every live mapping of the group, in
 * whichever thread made it: for a thread that is being ended, so that I/O
 * it leaves behind (a read still on the thread pool) never writes the
 * shared memory again. Its mappings are freed as before. */
static napi_value js_mmap_revoke_group(napi_env env, napi_callback_info info) {
    ARGS(1, "mmapRevokeGroup");
    ARG_INT(int32_t, group, 0, "group", 1, INT32_MAX, "an integer in 1..2^31-1");
    int n = 0, err = 0;
    pthread_mutex_lock(&groups_lock);
    for (mapping_t *m = grouped; m; m = m->next) {
        if (m->group != group || !m->mapped || m->revoked) continue;
        if (scratch_over(m->addr, m->len)) {
            m->revoked = true;
            n++;
        } else if (!err) {
            err = errno;
        }
    }
    pthread_mutex_unlock(&groups_lock);
    return make_int(env, err ? -err : n);
}

/* munmap(handle, arrayBuffer): detach first, so every view reads length 0,
 * then unmap. Idempotent. */
static napi_value js_munmap(napi_env env, napi_callback_info info) {
    mapping_t *m = NULL;
    bool is_ab = false, detached = false;
    void *data = NULL;
    size_t len = 0;
    ARGS(2, "munmap");
    if (!arg_handle(env, FN, argv[0], &MAPPING_TAG, "a mapping handle (from mmap)", (void **)&m)) return NULL;
    if (napi_is_arraybuffer(env, argv[1], &is_ab) != napi_ok || !is_ab)
        return throw_arg(env, false, FN, "arrayBuffer", -1, "an ArrayBuffer", argv[1]), NULL;
    if (!m->mapped) return make_int(env, 0);
    if (m->watchers > 0) return make_int(env, -EBUSY); /* a watch still reads it: stop the watch first */
    napi_is_detached_arraybuffer(env, argv[1], &detached);
    /* Unmapping under another mapping's live ArrayBuffer would leave it reading unmapped memory. */
    if (!detached && (napi_get_arraybuffer_info(env, argv[1], &data, &len) != napi_ok || data != m->addr)) {
        napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "munmap: arrayBuffer is not the one mmap returned with this handle");
        return NULL;
    }
    if (!detached && napi_detach_arraybuffer(env, argv[1]) != napi_ok)
        return throw_errno(env, "munmap: cannot detach", EINVAL);
    mapping_unmap(m);
    return make_int(env, 0);
}

#include "watch.h"

/* ------------------------------------------------------------------ fds */

static napi_value js_eventfd(napi_env env, napi_callback_info info) {
    ARGS(1, "eventfd");
    ARG_INT(unsigned, initval, 0, "initval", 0, UINT32_MAX, NULL);
    int fd = eventfd(initval, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return throw_errno(env, "eventfd", errno);
    return make_int(env, fd);
}

/* eventfdWrite(fd, n) -> 0 or -errno */
static napi_value js_eventfd_write(napi_env env, napi_callback_info info) {
    ARGS(2, "eventfdWrite");
    ARG_FD(fd, 0);
    ARG_INT(uint64_t, v, 1, "value", 0, MAX_SAFE_INT, "an integer >= 0");
    ssize_t n = write(fd, &v, sizeof v);
    return make_int(env, n == sizeof v ? 0 : -errno);
}

/* eventfdRead(fd) -> counter value, or -errno (-EAGAIN when zero) */
static napi_value js_eventfd_read(napi_env env, napi_callback_info info) {
    ARGS(1, "eventfdRead");
    ARG_FD(fd, 0);
    uint64_t v = 0;
    ssize_t n = read(fd, &v, sizeof v);
    return make_int(env, n == sizeof v ? (int64_t)v : -errno);
}

/* memfd(name, size, allowSealing?) -> fd; throws on failure. */
static napi_value js_memfd(napi_env env, napi_callback_info info) {
    char name[64]; /* longer names are cut: only /proc shows them */
    size_t len;
    ARGS(3, "memfd");
    if (!arg_string(env, FN, "name", argv[0], name, sizeof name, &len)) return NULL;
    ARG_INT(int64_t, size, 1, "size", 0, MAX_SAFE_INT, "an integer >= 0");
    ARG_BOOL(sealing, 2, "allowSealing", true);
    int fd = memfd_create(name, MFD_CLOEXEC | (sealing ? MFD_ALLOW_SEALING : 0));
    if (fd < 0) return throw_errno(env, "memfd_create", errno);
    if (size > 0 && ftruncate(fd, size) < 0) {
        int e = errno;
        close(fd);
        return throw_errno(env, "ftruncate", e);
    }
    return make_int(env, fd);
}

static napi_value js_ftruncate(napi_env env, napi_callback_info info) {
    ARGS(2, "ftruncate");
    ARG_FD(fd, 0);
    ARG_I64(size, 1, "size");
    int rc = ftruncate(fd, (off_t)size);
    return make_int(env, rc < 0 ? -errno : 0);
}

static napi_value js_close(napi_env env, napi_callback_info info) {
    ARGS(1, "close");
    ARG_FD(fd, 0);
    return make_int(env, close(fd) < 0 ? -errno : 0);
}

static napi_value js_dup(napi_env env, napi_callback_info info) {
    ARGS(1, "dup");
    ARG_FD(old, 0);
    int fd = fcntl(old, F_DUPFD_CLOEXEC, 0);
    return make_int(env, fd < 0 ? -errno : fd);
}

/* setBlocking(fd, blocking) -> 0 or -errno: the end of a socket pair handed
 * to a child process, which expects ordinary blocking I/O. */
static napi_value js_set_blocking(napi_env env, napi_callback_info info) {
    ARGS(2, "setBlocking");
    ARG_FD(fd, 0);
    ARG_BOOL(blocking, 1, "blocking", false);
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return make_int(env, -errno);
    flags = blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK;
    return make_int(env, fcntl(fd, F_SETFL, flags) < 0 ? -errno : 0);
}

/* fdSize(fd) -> st_size or -errno: lets TS check a DMA fd covers its range. */
static napi_value js_fd_size(napi_env env, napi_callback_info info) {
    struct stat st;
    ARGS(1, "fdSize");
    ARG_FD(fd, 0);
    if (fstat(fd, &st) < 0) return make_int(env, -errno);
    return make_int(env, (int64_t)st.st_size);
}

/* fallocate(fd, mode, offset, length) -> Promise<0 | -errno>. Runs on the
 * libuv thread pool: punching or zeroing a large range can take a while.
 * Each call owns its state; the caller keeps fd open until it settles. */
typedef struct {
    napi_async_work work;
    napi_deferred deferred;
    int fd;
    int mode;
    int64_t offset;
    int64_t length;
    int result;
} fallocate_req;

static void fallocate_execute(napi_env env, void *data) {
    fallocate_req *r = data;
    int rc;
    do rc = fallocate(r->fd, r->mode, (off_t)r->offset, (off_t)r->length);
    while (rc < 0 && errno == EINTR);
    r->result = rc < 0 ? -errno : 0;
}

static void fallocate_complete(napi_env env, napi_status status, void *data) {
    fallocate_req *r = data;
    int rc = status == napi_ok ? r->result : -ECANCELED;
    napi_resolve_deferred(env, r->deferred, make_int(env, rc));
    napi_delete_async_work(env, r->work);
    free(r);
}

static napi_value js_fallocate(napi_env env, napi_callback_info info) {
    napi_value promise, name;
    ARGS(4, "fallocate");
    ARG_FD(fd, 0);
    ARG_INT(int, mode, 1, "mode", INT32_MIN, INT32_MAX, NULL);
    ARG_I64(offset, 2, "offset");
    ARG_I64(length, 3, "length");
    fallocate_req *r = calloc(1, sizeof *r);
    if (!r) return throw_errno(env, "fallocate", ENOMEM);
    r->fd = fd;
    r->mode = mode;
    r->offset = offset;
    r->length = length;
    if (napi_create_promise(env, &r->deferred, &promise) != napi_ok) {
        free(r);
        napi_throw_error(env, NULL, "N-API call failed: napi_create_promise");
        return NULL;
    }
    if (r->fd < 0 || r->mode < 0 || r->offset < 0 || r->length <= 0) {
        /* fallocate would say EBADF/EINVAL too; answer without a thread hop */
        napi_resolve_deferred(env, r->deferred, make_int(env, r->fd < 0 ? -EBADF : -EINVAL));
        free(r);
        return promise;
    }
    napi_create_string_utf8(env, "muser.fallocate", NAPI_AUTO_LENGTH, &name);
    if (napi_create_async_work(env, NULL, name, fallocate_execute, fallocate_complete, r, &r->work) != napi_ok ||
        napi_queue_async_work(env, r->work) != napi_ok) {
        napi_resolve_deferred(env, r->deferred, make_int(env, -ENOMEM));
        if (r->work) napi_delete_async_work(env, r->work);
        free(r);
    }
    return promise;
}

/* blockDeviceSize(fd) -> bytes or -errno (BLKGETSIZE64; st_size is 0 for block devices). */
static napi_value js_block_device_size(napi_env env, napi_callback_info info) {
    uint64_t size = 0;
    ARGS(1, "blockDeviceSize");
    ARG_FD(fd, 0);
    if (ioctl(fd, BLKGETSIZE64, &size) < 0) return make_int(env, -errno);
    return make_int(env, (int64_t)size);
}

/* fdSeals(fd) -> F_GET_SEALS bits, or -errno (EINVAL: the file has no seals, e.g. not a memfd). */
static napi_value js_fd_seals(napi_env env, napi_callback_info info) {
    ARGS(1, "fdSeals");
    ARG_FD(fd, 0);
    int r = fcntl(fd, F_GET_SEALS);
    return make_int(env, r < 0 ? -errno : r);
}

/* addSeals(fd, seals) -> 0 or -errno. */
static napi_value js_add_seals(napi_env env, napi_callback_info info) {
    ARGS(2, "addSeals");
    ARG_FD(fd, 0);
    ARG_INT(int, seals, 1, "seals", INT32_MIN, INT32_MAX, NULL);
    int r = fcntl(fd, F_ADD_SEALS, seals);
    return make_int(env, r < 0 ? -errno : 0);
}

/* pread(fd, bytes: Uint8Array, offset) / pwrite(...) -> bytes moved (short at end of
 * file), or -errno. How memory that may shrink is reached without mapping it:
 * a shrunk file gives a short count here where a mapping would raise SIGBUS. */
static napi_value pio(napi_env env, napi_value *argv, const char *FN, bool write) {
    void *data;
    size_t len;
    ARG_FD(fd, 0);
    if (!arg_bytes(env, FN, "bytes", -1, argv[1], &data, &len)) return NULL;
    ARG_I64(off, 2, "offset");
    if (off < 0) return make_int(env, -EINVAL);
    size_t done = 0;
    while (done < len) {
        ssize_t n = write ? pwrite(fd, (uint8_t *)data + done, len - done, (off_t)(off + done))
                          : pread(fd, (uint8_t *)data + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return make_int(env, done > 0 ? (int64_t)done : -errno);
        if (n == 0) break;
        done += (size_t)n;
    }
    return make_int(env, (int64_t)done);
}

/* preadvNowait(fd, buffers: Uint8Array[], offset) -> bytes read, or -errno:
 * preadv2 with RWF_NOWAIT, which reads only what the page cache holds and
 * says EAGAIN instead of blocking on the disk. Lets a block backend serve
 * cached reads on the event loop and go to the thread pool only for the rest. */
#define MAX_NOWAIT_IOV 64
static napi_value js_preadv_nowait(napi_env env, napi_callback_info info) {
    struct iovec iov[MAX_NOWAIT_IOV];
    uint32_t n = 0;
    ARGS(3, "preadvNowait");
    ARG_FD(fd, 0);
    if (!arg_array(env, FN, "buffers", argv[1], UINT32_MAX, "an array of Uint8Arrays", &n)) return NULL;
    if (n > MAX_NOWAIT_IOV) return make_int(env, -E2BIG); /* the caller splits the list */
    for (uint32_t i = 0; i < n; i++) {
        napi_value b;
        CALL(env, napi_get_element(env, argv[1], i, &b));
        if (!arg_bytes(env, FN, "buffers", (int)i, b, &iov[i].iov_base, &iov[i].iov_len)) return NULL;
    }
    ARG_I64(off, 2, "offset");
    if (off < 0) return make_int(env, -EINVAL);
    if (n == 0) return make_int(env, 0);
    ssize_t r;
    do r = preadv2(fd, iov, (int)n, (off_t)off, RWF_NOWAIT);
    while (r < 0 && errno == EINTR);
    return make_int(env, r < 0 ? -errno : (int64_t)r);
}

static napi_value js_pread(napi_env env, napi_callback_info info) {
    ARGS(3, "pread");
    return pio(env, argv, FN, false);
}
static napi_value js_pwrite(napi_env env, napi_callback_info info) {
    ARGS(3, "pwrite");
    return pio(env, argv, FN, true);
}

#define EXPORT(name, fn)                                                       \
    do {                                                                       \
        napi_value f;                                                          \
        napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f);       \
        napi_set_named_property(env, exports, name, f);                        \
    } while (0)

/* One more handle of a tearing-down instance closed; the last one frees it. */
static void instance_handle_closed(instance_t *inst) {
    if (--inst->closing_handles > 0) return;
    napi_remove_async_cleanup_hook(inst->cleanup);
    free(inst->recv_buf);
    free(inst);
}

static void spin_closed(uv_handle_t *h) { instance_handle_closed(h->data); }

/* The environment (main thread or a worker) goes away: close the spin
 * handle and every poller still open on its loop (libuv refuses to close a
 * loop with open handles), then free the instance. */
static void instance_cleanup(napi_async_cleanup_hook_handle handle, void *arg) {
    (void)handle;
    instance_t *inst = arg;
    inst->closing_handles = 1 + (inst->watch_timer_init ? 1 : 0);
    for (poller_t *p = inst->pollers; p; p = p->next) inst->closing_handles++;
    watches_teardown(inst);
    for (poller_t *p = inst->pollers, *next; p; p = next) {
        next = p->next;
        if (p->closing) continue; /* its close is already on the way */
        p->closing = true;
        uv_poll_stop(&p->handle);
        uv_close((uv_handle_t *)&p->handle, poller_closed);
    }
    inst->spinning = false;
    uv_idle_stop(&inst->spin);
    uv_close((uv_handle_t *)&inst->spin, spin_closed);
    if (inst->watch_timer_init) {
        uv_timer_stop(&inst->watch_timer);
        uv_close((uv_handle_t *)&inst->watch_timer, spin_closed);
    }
}

static napi_value init(napi_env env, napi_value exports) {
    uv_loop_t *loop;
    instance_t *inst = calloc(1, sizeof *inst);
    if (!inst) return throw_errno(env, "init", ENOMEM);
    inst->recv_buf = malloc(RECV_BUF_SIZE);
    if (!inst->recv_buf || napi_get_uv_event_loop(env, &loop) != napi_ok || uv_idle_init(loop, &inst->spin) != 0) {
        free(inst->recv_buf);
        free(inst);
        return throw_errno(env, "init", ENOMEM);
    }
    inst->spin.data = inst;
    inst->spin_init = true;
    /* The spin handle never keeps the process alive on its own; nor does the watch timer. */
    uv_unref((uv_handle_t *)&inst->spin);
    if (uv_timer_init(loop, &inst->watch_timer) == 0) {
        inst->watch_timer.data = inst;
        inst->watch_timer_init = true;
        uv_unref((uv_handle_t *)&inst->watch_timer);
    }
    if (napi_add_async_cleanup_hook(env, instance_cleanup, inst, &inst->cleanup) != napi_ok ||
        napi_set_instance_data(env, inst, NULL, NULL) != napi_ok) {
        uv_close((uv_handle_t *)&inst->spin, NULL);
        if (inst->watch_timer_init) uv_close((uv_handle_t *)&inst->watch_timer, NULL);
        return throw_errno(env, "init", ENOMEM);
    }
    EXPORT("listen", js_listen);
    EXPORT("accept", js_accept);
    EXPORT("connect", js_connect);
    EXPORT("socketpair", js_socketpair);
    EXPORT("sendmsg", js_sendmsg);
    EXPORT("pollStart", js_poll_start);
    EXPORT("pollWritable", js_poll_writable);
    EXPORT("pollPause", js_poll_pause);
    EXPORT("pollSetBuffer", js_poll_set_buffer);
    EXPORT("pollStop", js_poll_stop);
    EXPORT("pollSpin", js_poll_spin);
    EXPORT("recvDiscard", js_recv_discard);
    EXPORT("peekOffset", js_peek_offset);
    EXPORT("setPeekOffset", js_set_peek_offset);
    EXPORT("spinState", js_spin_state);
    EXPORT("watchStart", js_watch_start);
    EXPORT("watchStop", js_watch_stop);
    EXPORT("watchPause", js_watch_pause);
    EXPORT("watchStore", js_watch_store);
    EXPORT("watchScan", js_watch_scan);
    EXPORT("memoryFence", js_memory_fence);
    EXPORT("mmap", js_mmap);
    EXPORT("munmap", js_munmap);
    EXPORT("mmapRevoke", js_mmap_revoke);
    EXPORT("mmapReplace", js_mmap_replace);
    EXPORT("mmapRevokeGroup", js_mmap_revoke_group);
    EXPORT("eventfd", js_eventfd);
    EXPORT("eventfdWrite", js_eventfd_write);
    EXPORT("eventfdRead", js_eventfd_read);
    EXPORT("memfd", js_memfd);
    EXPORT("ftruncate", js_ftruncate);
    EXPORT("close", js_close);
    EXPORT("dup", js_dup);
    EXPORT("setBlocking", js_set_blocking);
    EXPORT("fdSize", js_fd_size);
    EXPORT("fallocate", js_fallocate);
    EXPORT("blockDeviceSize", js_block_device_size);
    EXPORT("fdSeals", js_fd_seals);
    EXPORT("addSeals", js_add_seals);
    EXPORT("pread", js_pread);
    EXPORT("preadvNowait", js_preadv_nowait);
    EXPORT("pwrite", js_pwrite);
    return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
