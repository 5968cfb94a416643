/*
 * muser native addon: only the kernel primitives Node.js lacks.
 *
 *  - AF_UNIX stream sockets: listen, accept, connect, socketpair;
 *  - sendmsg / recvmsg with SCM_RIGHTS, reads driven by uv_poll;
 *  - mmap of an fd as an ArrayBuffer that is detached before munmap;
 *  - eventfd, memfd_create, ftruncate, close, dup, file seals;
 *  - fallocate on the thread pool (block backends), a block device's size;
 *  - pread / pwrite, for client memory that must not be mapped;
 *  - busy polling: an idle handle that keeps the loop from sleeping in
 *    epoll while a spinning poller saw activity within its idle window.
 *
 * All state is per instance (napi instance data), so the addon loads in
 * worker threads: each thread has its own receive buffer and spin handle.
 *
 * Every policy (framing, validation, fd ownership) lives in TypeScript.
 * Functions that can fail with an expected errno return -errno instead of
 * throwing, so the hot path never builds exception objects.
 */
#include <errno.h>
#include <linux/fs.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdint.h>
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

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
    size_t argc = want;
    if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
    for (size_t i = argc; i < want; i++) napi_get_undefined(env, &argv[i]);
    return 0;
}

static int32_t arg_i32(napi_env env, napi_value v) {
    int32_t r = -1;
    napi_get_value_int32(env, v, &r);
    return r;
}

static int64_t arg_i64(napi_env env, napi_value v) {
    int64_t r = -1;
    napi_get_value_int64(env, v, &r);
    return r;
}

static int arg_path(napi_env env, napi_value v, struct sockaddr_un *sa) {
    size_t len = 0;
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (napi_get_value_string_utf8(env, v, sa->sun_path, sizeof sa->sun_path, &len) != napi_ok)
        return -EINVAL;
    if (len == 0 || len >= sizeof sa->sun_path - 1) return -ENAMETOOLONG;
    return 0;
}

/* listen(path, backlog, mode) -> fd. Owner-only mode is applied before listen(),
 * so no client can connect while the socket is more open than requested. */
static napi_value js_listen(napi_env env, napi_callback_info info) {
    napi_value argv[3];
    struct sockaddr_un sa;
    if (get_args(env, info, 3, argv) < 0) return NULL;
    int rc = arg_path(env, argv[0], &sa);
    if (rc < 0) return throw_errno(env, "listen", -rc);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return throw_errno(env, "socket", errno);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(fd);
        return throw_errno(env, "bind", e);
    }
    if (chmod(sa.sun_path, (mode_t)arg_i32(env, argv[2])) < 0 || listen(fd, arg_i32(env, argv[1])) < 0) {
        int e = errno;
        close(fd);
        unlink(sa.sun_path);
        return throw_errno(env, "listen", e);
    }
    return make_int(env, fd);
}

/* accept(fd) -> new fd, or -errno (-EAGAIN when nobody waits). */
static napi_value js_accept(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    if (get_args(env, info, 1, argv) < 0) return NULL;
    int fd = accept4(arg_i32(env, argv[0]), NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return make_int(env, fd < 0 ? -errno : fd);
}

/* connect(path) -> non-blocking fd; throws on failure. */
static napi_value js_connect(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    struct sockaddr_un sa;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    int rc = arg_path(env, argv[0], &sa);
    if (rc < 0) return throw_errno(env, "connect", -rc);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return throw_errno(env, "socket", errno);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(fd);
        return throw_errno(env, "connect", e);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
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

/* sendmsg(fd, buffers: Buffer | Buffer[], fds?: number[]) -> bytes sent or -errno. */
#define MAX_IOV 64
static napi_value js_sendmsg(napi_env env, napi_callback_info info) {
    napi_value argv[3];
    struct iovec iov[MAX_IOV];
    int fds[MAX_FDS_PER_MSG];
    size_t niov = 0;
    uint32_t nfds = 0;
    bool is_array = false;
    if (get_args(env, info, 3, argv) < 0) return NULL;
    int fd = arg_i32(env, argv[0]);
    napi_is_array(env, argv[1], &is_array);
    if (is_array) {
        uint32_t n = 0;
        napi_get_array_length(env, argv[1], &n);
        if (n > MAX_IOV) return throw_errno(env, "sendmsg: too many buffers", E2BIG);
        for (uint32_t i = 0; i < n; i++) {
            napi_value b;
            napi_get_element(env, argv[1], i, &b);
            if (napi_get_buffer_info(env, b, &iov[niov].iov_base, &iov[niov].iov_len) != napi_ok)
                return throw_errno(env, "sendmsg: not a Buffer", EINVAL);
            niov++;
        }
    } else {
        if (napi_get_buffer_info(env, argv[1], &iov[0].iov_base, &iov[0].iov_len) != napi_ok)
            return throw_errno(env, "sendmsg: not a Buffer", EINVAL);
        niov = 1;
    }
    napi_valuetype t;
    napi_typeof(env, argv[2], &t);
    if (t == napi_object) {
        napi_get_array_length(env, argv[2], &nfds);
        if (nfds > MAX_FDS_PER_MSG) return throw_errno(env, "sendmsg: too many fds", E2BIG);
        for (uint32_t i = 0; i < nfds; i++) {
            napi_value v;
            napi_get_element(env, argv[2], i, &v);
            fds[i] = arg_i32(env, v);
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

enum { MODE_STREAM = 0, MODE_EVENTFD = 1, MODE_READABLE = 2 };
enum { EV_DATA = 0, EV_EOF = 1, EV_ERROR = 2, EV_WRITABLE = 3, EV_COUNT = 4, EV_READABLE = 5 };

typedef struct poller poller_t;

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
    napi_async_cleanup_hook_handle cleanup;
} instance_t;

struct poller {
    uv_poll_t handle;
    instance_t *inst;
    poller_t *prev, *next;
    uint64_t spin_ns; /* 0: this poller never makes the loop spin */
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

static void spin_cb(uv_idle_t *h) {
    instance_t *inst = h->data;
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

/* One recvmsg into the shared buffer; returns bytes, 0 on EOF, -errno. */
static ssize_t recv_chunk(int fd, uint8_t *buf, size_t len, int *fds, int *nfds) {
    char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_MSG)];
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    ssize_t n;
    *nfds = 0;
    do n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
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
        /* The kernel dropped fds it could not deliver; what did arrive is still ours. */
    }
    if (n == 0) {
        close_fds(fds, *nfds); /* fds with EOF belong to no message */
        *nfds = 0;
    }
    return n;
}

static void poller_read_stream(poller_t *p) {
    int fds[MAX_FDS_PER_MSG], nfds;
    /* Level-triggered: a short read means the queue is empty for now, so
     * stop without paying for an EAGAIN; otherwise loop a bounded number of times. */
    /* The buffer is looked up every round: a callback may have swapped it
     * (pollSetBuffer) or paused reading (pollPause, backpressure). */
    for (int round = 0; round < 16 && !p->closing && (p->events & UV_READABLE); round++) {
        uint8_t *recv_buf = p->inst->recv_buf;
        uint8_t *buf = p->user_buf ? p->user_buf : recv_buf;
        size_t len = p->user_buf ? p->user_buf_len : RECV_BUF_SIZE;
        ssize_t n = recv_chunk(p->fd, buf, len, fds, &nfds);
        if (n == -EAGAIN || n == -EWOULDBLOCK) return;
        napi_handle_scope scope;
        napi_open_handle_scope(p->env, &scope);
        if (n < 0) {
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
        if (n <= 0 || (size_t)n < len) return;
    }
}

static void poller_read_eventfd(poller_t *p) {
    uint64_t v;
    ssize_t n = read(p->fd, &v, sizeof v);
    if (n != sizeof v) return;
    napi_handle_scope scope;
    napi_open_handle_scope(p->env, &scope);
    napi_value count;
    napi_create_double(p->env, (double)v, &count);
    poller_emit(p, EV_COUNT, count, NULL);
    napi_close_handle_scope(p->env, scope);
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
        if (p->mode == MODE_STREAM) poller_read_stream(p);
        else if (p->mode == MODE_EVENTFD) poller_read_eventfd(p);
        else {
            napi_handle_scope scope;
            napi_open_handle_scope(p->env, &scope);
            poller_emit(p, EV_READABLE, NULL, NULL);
            napi_close_handle_scope(p->env, scope);
        }
    }
}

static void poller_closed(uv_handle_t *h) {
    poller_t *p = (poller_t *)h->data;
    instance_t *inst = p->inst;
    if (p->prev) p->prev->next = p->next;
    else inst->pollers = p->next;
    if (p->next) p->next->prev = p->prev;
    napi_delete_reference(p->env, p->callback);
    napi_delete_reference(p->env, p->self);
    if (p->user_buf_ref) napi_delete_reference(p->env, p->user_buf_ref);
    free(p);
    if (inst->closing_handles > 0) instance_handle_closed(inst);
}

static poller_t *get_poller(napi_env env, napi_value v) {
    poller_t *p = NULL;
    if (napi_get_value_external(env, v, (void **)&p) != napi_ok) return NULL;
    return p;
}

/* pollStart(fd, mode, callback, recvBuffer?) -> handle. The callback receives
 * (kind, a, b): DATA(buffer, fds?) - or DATA(length, fds?) when the data
 * landed in recvBuffer - EOF, ERROR(errno), WRITABLE, COUNT(n) for eventfds,
 * READABLE for raw fds. The fd is not owned. */
static napi_value js_poll_start(napi_env env, napi_callback_info info) {
    napi_value argv[4], ext;
    if (get_args(env, info, 4, argv) < 0) return NULL;
    uv_loop_t *loop;
    CALL(env, napi_get_uv_event_loop(env, &loop));
    poller_t *p = calloc(1, sizeof *p);
    if (!p) return throw_errno(env, "pollStart", ENOMEM);
    p->env = env;
    if (napi_get_instance_data(env, (void **)&p->inst) != napi_ok || !p->inst) {
        free(p);
        return throw_errno(env, "pollStart: addon not initialised", EINVAL);
    }
    p->fd = arg_i32(env, argv[0]);
    p->mode = arg_i32(env, argv[1]);
    int rc = uv_poll_init(loop, &p->handle, p->fd);
    if (rc < 0) {
        free(p);
        return throw_errno(env, "uv_poll_init", -rc);
    }
    p->handle.data = p;
    bool is_buf = false;
    napi_is_buffer(env, argv[3], &is_buf);
    if (is_buf) {
        void *data;
        size_t len;
        napi_get_buffer_info(env, argv[3], &data, &len);
        if (len > 0) {
            p->user_buf = data;
            p->user_buf_len = len;
            napi_create_reference(env, argv[3], 1, &p->user_buf_ref);
        }
    }
    napi_create_reference(env, argv[2], 1, &p->callback);
    napi_create_external(env, p, NULL, NULL, &ext);
    napi_create_reference(env, ext, 1, &p->self);
    p->events = UV_READABLE | UV_DISCONNECT;
    p->next = p->inst->pollers;
    if (p->next) p->next->prev = p;
    p->inst->pollers = p;
    uv_poll_start(&p->handle, p->events, poller_cb);
    return ext;
}

/* pollWritable(handle, on): also wake when the fd becomes writable. */
static napi_value js_poll_writable(napi_env env, napi_callback_info info) {
    napi_value argv[2];
    bool on = false;
    if (get_args(env, info, 2, argv) < 0) return NULL;
    poller_t *p = get_poller(env, argv[0]);
    if (!p || p->closing) return NULL;
    napi_get_value_bool(env, argv[1], &on);
    p->events = on ? (p->events | UV_WRITABLE) : (p->events & ~UV_WRITABLE);
    /* Reading may be paused: with nothing left to watch, stop (libuv refuses 0 events). */
    if (p->events) uv_poll_start(&p->handle, p->events, poller_cb);
    else uv_poll_stop(&p->handle);
    return NULL;
}

/* pollPause(handle, paused): stop or resume read wakeups (backpressure). */
static napi_value js_poll_pause(napi_env env, napi_callback_info info) {
    napi_value argv[2];
    bool paused = false;
    if (get_args(env, info, 2, argv) < 0) return NULL;
    poller_t *p = get_poller(env, argv[0]);
    if (!p || p->closing) return NULL;
    napi_get_value_bool(env, argv[1], &paused);
    int ev = paused ? (p->events & UV_WRITABLE) : (p->events | UV_READABLE | UV_DISCONNECT);
    p->events = ev;
    if (ev) uv_poll_start(&p->handle, ev, poller_cb);
    else uv_poll_stop(&p->handle);
    return NULL;
}

/* pollSetBuffer(handle, buffer): later reads land in `buffer` instead of
 * the one given to pollStart (the old one may still be in use in JS). */
static napi_value js_poll_set_buffer(napi_env env, napi_callback_info info) {
    napi_value argv[2];
    if (get_args(env, info, 2, argv) < 0) return NULL;
    poller_t *p = get_poller(env, argv[0]);
    if (!p || p->closing || !p->user_buf) return throw_errno(env, "pollSetBuffer", EINVAL);
    void *data;
    size_t len;
    bool is_buf = false;
    napi_is_buffer(env, argv[1], &is_buf);
    if (!is_buf || napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok || len == 0)
        return throw_errno(env, "pollSetBuffer: not a Buffer", EINVAL);
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
    napi_value argv[2];
    if (get_args(env, info, 2, argv) < 0) return NULL;
    poller_t *p = get_poller(env, argv[0]);
    if (!p || p->closing) return NULL;
    int64_t ns = arg_i64(env, argv[1]);
    p->spin_ns = ns > 0 ? (uint64_t)ns : 0;
    if (p->spin_ns) spin_arm(p->inst, p->spin_ns);
    return NULL;
}

/* spinState() -> [spinning (0/1), times the loop started spinning]. */
static napi_value js_spin_state(napi_env env, napi_callback_info info) {
    instance_t *inst = NULL;
    napi_value arr;
    napi_get_instance_data(env, (void **)&inst);
    CALL(env, napi_create_array_with_length(env, 2, &arr));
    napi_set_element(env, arr, 0, make_int(env, inst && inst->spinning ? 1 : 0));
    napi_set_element(env, arr, 1, make_int(env, inst ? (int64_t)inst->spin_starts : 0));
    return arr;
}

/* pollStop(handle): stop watching; the fd stays open (its owner closes it). */
static napi_value js_poll_stop(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    if (get_args(env, info, 1, argv) < 0) return NULL;
    poller_t *p = get_poller(env, argv[0]);
    if (!p || p->closing) return NULL;
    p->closing = true;
    uv_poll_stop(&p->handle);
    uv_close((uv_handle_t *)&p->handle, poller_closed);
    return NULL;
}

/* ------------------------------------------------------------------ mmap */

typedef struct {
    void *addr;
    size_t len;
    int refs;     /* the ArrayBuffer's backing store and the JS handle */
    bool mapped;
} mapping_t;

static void mapping_release(mapping_t *m) {
    if (--m->refs == 0) {
        if (m->mapped) munmap(m->addr, m->len);
        free(m);
    }
}

static void mapping_buffer_finalize(napi_env env, void *data, void *hint) { mapping_release(hint); }
static void mapping_handle_finalize(napi_env env, void *data, void *hint) { mapping_release(data); }

/* mmap(fd, offset, length, shared) -> [ArrayBuffer, handle] or -errno.
 * shared: MAP_SHARED, writes reach the peer. Otherwise MAP_PRIVATE
 * copy-on-write, for memory the peer granted read-only: a stray write
 * through a view then lands in a private copy instead of faulting. */
static napi_value js_mmap(napi_env env, napi_callback_info info) {
    napi_value argv[4], ab, handle, arr;
    bool shared = false;
    if (get_args(env, info, 4, argv) < 0) return NULL;
    int fd = arg_i32(env, argv[0]);
    int64_t off = arg_i64(env, argv[1]), len = arg_i64(env, argv[2]);
    napi_get_value_bool(env, argv[3], &shared);
    if (off < 0 || len <= 0) return make_int(env, -EINVAL);
    void *addr = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, shared ? MAP_SHARED : MAP_PRIVATE, fd, (off_t)off);
    if (addr == MAP_FAILED) return make_int(env, -errno);
    mapping_t *m = calloc(1, sizeof *m);
    if (!m) {
        munmap(addr, (size_t)len);
        return make_int(env, -ENOMEM);
    }
    m->addr = addr;
    m->len = (size_t)len;
    m->refs = 2;
    m->mapped = true;
    if (napi_create_external_arraybuffer(env, addr, m->len, mapping_buffer_finalize, m, &ab) != napi_ok) {
        munmap(addr, m->len);
        free(m);
        return throw_errno(env, "mmap: external ArrayBuffer refused", ENOTSUP);
    }
    napi_create_external(env, m, mapping_handle_finalize, NULL, &handle);
    napi_create_array_with_length(env, 2, &arr);
    napi_set_element(env, arr, 0, ab);
    napi_set_element(env, arr, 1, handle);
    return arr;
}

/* munmap(handle, arrayBuffer): detach first, so every view reads length 0,
 * then unmap. Idempotent. */
static napi_value js_munmap(napi_env env, napi_callback_info info) {
    napi_value argv[2];
    mapping_t *m = NULL;
    if (get_args(env, info, 2, argv) < 0) return NULL;
    if (napi_get_value_external(env, argv[0], (void **)&m) != napi_ok || !m) return make_int(env, -EINVAL);
    if (!m->mapped) return make_int(env, 0);
    bool detached = false;
    napi_is_detached_arraybuffer(env, argv[1], &detached);
    if (!detached && napi_detach_arraybuffer(env, argv[1]) != napi_ok)
        return throw_errno(env, "munmap: cannot detach", EINVAL);
    munmap(m->addr, m->len);
    m->mapped = false;
    return make_int(env, 0);
}

/* ------------------------------------------------------------------ fds */

static napi_value js_eventfd(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    if (get_args(env, info, 1, argv) < 0) return NULL;
    int fd = eventfd((unsigned)arg_i32(env, argv[0]), EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return throw_errno(env, "eventfd", errno);
    return make_int(env, fd);
}

/* eventfdWrite(fd, n) -> 0 or -errno */
static napi_value js_eventfd_write(napi_env env, napi_callback_info info) {
    napi_value argv[2];
    if (get_args(env, info, 2, argv) < 0) return NULL;
    uint64_t v = (uint64_t)arg_i64(env, argv[1]);
    ssize_t n = write(arg_i32(env, argv[0]), &v, sizeof v);
    return make_int(env, n == sizeof v ? 0 : -errno);
}

/* eventfdRead(fd) -> counter value, or -errno (-EAGAIN when zero) */
static napi_value js_eventfd_read(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    if (get_args(env, info, 1, argv) < 0) return NULL;
    uint64_t v = 0;
    ssize_t n = read(arg_i32(env, argv[0]), &v, sizeof v);
    return make_int(env, n == sizeof v ? (int64_t)v : -errno);
}

/* memfd(name, size, allowSealing?) -> fd; throws on failure. */
static napi_value js_memfd(napi_env env, napi_callback_info info) {
    napi_value argv[3];
    char name[64] = "muser";
    size_t len;
    bool sealing = false;
    if (get_args(env, info, 3, argv) < 0) return NULL;
    napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len);
    napi_get_value_bool(env, argv[2], &sealing);
    int fd = memfd_create(name, MFD_CLOEXEC | (sealing ? MFD_ALLOW_SEALING : 0));
    if (fd < 0) return throw_errno(env, "memfd_create", errno);
    int64_t size = arg_i64(env, argv[1]);
    if (size > 0 && ftruncate(fd, size) < 0) {
        int e = errno;
        close(fd);
        return throw_errno(env, "ftruncate", e);
    }
    return make_int(env, fd);
}

static napi_value js_ftruncate(napi_env env, napi_callback_info info) {
    napi_value argv[2];
    if (get_args(env, info, 2, argv) < 0) return NULL;
    int rc = ftruncate(arg_i32(env, argv[0]), arg_i64(env, argv[1]));
    return make_int(env, rc < 0 ? -errno : 0);
}

static napi_value js_close(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    if (get_args(env, info, 1, argv) < 0) return NULL;
    return make_int(env, close(arg_i32(env, argv[0])) < 0 ? -errno : 0);
}

static napi_value js_dup(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    if (get_args(env, info, 1, argv) < 0) return NULL;
    int fd = fcntl(arg_i32(env, argv[0]), F_DUPFD_CLOEXEC, 0);
    return make_int(env, fd < 0 ? -errno : fd);
}

/* setBlocking(fd, blocking) -> 0 or -errno: the end of a socket pair handed
 * to a child process, which expects ordinary blocking I/O. */
static napi_value js_set_blocking(napi_env env, napi_callback_info info) {
    napi_value argv[2];
    bool blocking;
    if (get_args(env, info, 2, argv) < 0) return NULL;
    int fd = arg_i32(env, argv[0]);
    napi_get_value_bool(env, argv[1], &blocking);
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return make_int(env, -errno);
    flags = blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK;
    return make_int(env, fcntl(fd, F_SETFL, flags) < 0 ? -errno : 0);
}

/* fdSize(fd) -> st_size or -errno: lets TS check a DMA fd covers its range. */
static napi_value js_fd_size(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    struct stat st;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    if (fstat(arg_i32(env, argv[0]), &st) < 0) return make_int(env, -errno);
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
    napi_value argv[4], promise, name;
    if (get_args(env, info, 4, argv) < 0) return NULL;
    fallocate_req *r = calloc(1, sizeof *r);
    if (!r) return throw_errno(env, "fallocate", ENOMEM);
    r->fd = arg_i32(env, argv[0]);
    r->mode = arg_i32(env, argv[1]);
    r->offset = arg_i64(env, argv[2]);
    r->length = arg_i64(env, argv[3]);
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
    napi_value argv[1];
    uint64_t size = 0;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    if (ioctl(arg_i32(env, argv[0]), BLKGETSIZE64, &size) < 0) return make_int(env, -errno);
    return make_int(env, (int64_t)size);
}

/* fdSeals(fd) -> F_GET_SEALS bits, or -errno (EINVAL: the file has no seals, e.g. not a memfd). */
static napi_value js_fd_seals(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    if (get_args(env, info, 1, argv) < 0) return NULL;
    int r = fcntl(arg_i32(env, argv[0]), F_GET_SEALS);
    return make_int(env, r < 0 ? -errno : r);
}

/* addSeals(fd, seals) -> 0 or -errno. */
static napi_value js_add_seals(napi_env env, napi_callback_info info) {
    napi_value argv[2];
    if (get_args(env, info, 2, argv) < 0) return NULL;
    int r = fcntl(arg_i32(env, argv[0]), F_ADD_SEALS, arg_i32(env, argv[1]));
    return make_int(env, r < 0 ? -errno : 0);
}

static int typed_bytes(napi_env env, napi_value v, void **data, size_t *len) {
    napi_typedarray_type t;
    napi_value ab;
    size_t off;
    bool is_ta = false;
    napi_is_typedarray(env, v, &is_ta);
    if (!is_ta || napi_get_typedarray_info(env, v, &t, len, data, &ab, &off) != napi_ok || t != napi_uint8_array) return -1;
    return 0;
}

/* pread(fd, bytes: Uint8Array, offset) / pwrite(...) -> bytes moved (short at end of
 * file), or -errno. How memory that may shrink is reached without mapping it:
 * a shrunk file gives a short count here where a mapping would raise SIGBUS. */
static napi_value pio(napi_env env, napi_callback_info info, bool write) {
    napi_value argv[3];
    void *data;
    size_t len;
    if (get_args(env, info, 3, argv) < 0) return NULL;
    if (typed_bytes(env, argv[1], &data, &len) < 0) return make_int(env, -EINVAL);
    int fd = arg_i32(env, argv[0]);
    int64_t off = arg_i64(env, argv[2]);
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
    napi_value argv[3];
    struct iovec iov[MAX_NOWAIT_IOV];
    uint32_t n = 0;
    bool is_array = false;
    if (get_args(env, info, 3, argv) < 0) return NULL;
    napi_is_array(env, argv[1], &is_array);
    if (!is_array || napi_get_array_length(env, argv[1], &n) != napi_ok) return make_int(env, -EINVAL);
    if (n == 0) return make_int(env, 0);
    if (n > MAX_NOWAIT_IOV) return make_int(env, -E2BIG);
    for (uint32_t i = 0; i < n; i++) {
        napi_value b;
        napi_get_element(env, argv[1], i, &b);
        if (typed_bytes(env, b, &iov[i].iov_base, &iov[i].iov_len) < 0) return make_int(env, -EINVAL);
    }
    int64_t off = arg_i64(env, argv[2]);
    if (off < 0) return make_int(env, -EINVAL);
    ssize_t r;
    do r = preadv2(arg_i32(env, argv[0]), iov, (int)n, (off_t)off, RWF_NOWAIT);
    while (r < 0 && errno == EINTR);
    return make_int(env, r < 0 ? -errno : (int64_t)r);
}

static napi_value js_pread(napi_env env, napi_callback_info info) { return pio(env, info, false); }
static napi_value js_pwrite(napi_env env, napi_callback_info info) { return pio(env, info, true); }

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
    inst->closing_handles = 1;
    for (poller_t *p = inst->pollers; p; p = p->next) inst->closing_handles++;
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
    /* The spin handle never keeps the process alive on its own. */
    uv_unref((uv_handle_t *)&inst->spin);
    if (napi_add_async_cleanup_hook(env, instance_cleanup, inst, &inst->cleanup) != napi_ok ||
        napi_set_instance_data(env, inst, NULL, NULL) != napi_ok) {
        uv_close((uv_handle_t *)&inst->spin, NULL);
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
    EXPORT("spinState", js_spin_state);
    EXPORT("mmap", js_mmap);
    EXPORT("munmap", js_munmap);
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
