/*
 * Watched memory (included by muser.c only: everything here is static, and
 * it uses the instance, the spin handle and the mappings defined there).
 *
 * A watch is a run of 1-, 2- or 4-byte words in a shared mapping that
 * another process writes (a client that mapped a region: a guest's
 * doorbells). Nothing tells us of such a write, so the words are polled:
 *
 *  - on every turn of the event loop while it busy-polls (the spin idle
 *    handle): a change found there re-arms the busy-poll window (the
 *    watch's idleNs), so a guest that keeps ringing keeps it spinning;
 *  - on a timer (the shortest intervalMs of the thread's watches) while it
 *    sleeps, and a change found there starts the busy poll again.
 *
 * Two ways to tell a write: by value (each word is compared with the last
 * value seen; writing the same value again is not seen: right for NVMe's
 * absolute tail and head doorbells), or by rearming (the word is swapped
 * back to a rearm value, atomically, whenever it holds something else:
 * every write is seen, including one that repeats the last value, except a
 * write of the rearm value itself: right for virtio's notify, where the
 * driver writes the queue index each time). Several writes between two
 * scans are seen as one (the last value), as eventfd counts coalesce.
 *
 * A scan first compares the whole run with an image of what it expects
 * (the values seen, or the rearm value): one memcmp, about 0.1 us for a
 * 4 KiB page. Only when that differs does it read word by word, with
 * atomic loads, and call JS for the words that changed. The mapping stays mapped while watched: the watch
 * holds its ArrayBuffer, and munmap() refuses with EBUSY.
 */
#ifndef MUSER_WATCH_H
#define MUSER_WATCH_H

#define WATCH_MAX_WORDS 65536
#define WATCH_MAX_INTERVAL_MS 60000

struct watch {
    instance_t *inst;
    watch_t *next;
    napi_env env;
    napi_ref callback;
    napi_ref buffer; /* the mapping's ArrayBuffer: keeps it mapped */
    mapping_t *map;
    uint8_t *base;
    uint32_t count; /* words */
    uint8_t width;
    bool rearm;
    uint32_t rearm_value;
    /* What each word is expected to hold, laid out as the memory: the
     * last value seen (by value) or the rearm value. */
    uint8_t *image;
    uint64_t idle_ns;
    uint64_t interval_ms;
    bool paused;
    bool stopped;
    /* Freed when both unlisted (stopped, and no scan running) and the JS
     * handle was collected: a stale handle never points at freed memory. */
    int refs;
};

static const napi_type_tag WATCH_TAG = {0x6d75736572776174ULL, 0x63682d68616e646cULL};

static inline uint32_t watch_load(const watch_t *w, uint32_t i) {
    void *p = w->base + (size_t)i * w->width;
    switch (w->width) {
    case 1: return __atomic_load_n((uint8_t *)p, __ATOMIC_ACQUIRE);
    case 2: return __atomic_load_n((uint16_t *)p, __ATOMIC_ACQUIRE);
    default: return __atomic_load_n((uint32_t *)p, __ATOMIC_ACQUIRE);
    }
}

static inline uint32_t watch_swap(const watch_t *w, uint32_t i, uint32_t v) {
    void *p = w->base + (size_t)i * w->width;
    switch (w->width) {
    case 1: return __atomic_exchange_n((uint8_t *)p, (uint8_t)v, __ATOMIC_SEQ_CST);
    case 2: return __atomic_exchange_n((uint16_t *)p, (uint16_t)v, __ATOMIC_SEQ_CST);
    default: return __atomic_exchange_n((uint32_t *)p, v, __ATOMIC_SEQ_CST);
    }
}

static inline void watch_put(const watch_t *w, uint32_t i, uint32_t v) {
    void *p = w->base + (size_t)i * w->width;
    switch (w->width) {
    case 1: __atomic_store_n((uint8_t *)p, (uint8_t)v, __ATOMIC_SEQ_CST); break;
    case 2: __atomic_store_n((uint16_t *)p, (uint16_t)v, __ATOMIC_SEQ_CST); break;
    default: __atomic_store_n((uint32_t *)p, v, __ATOMIC_SEQ_CST); break;
    }
}

static inline uint32_t image_word(const watch_t *w, uint32_t i) {
    const uint8_t *p = w->image + (size_t)i * w->width;
    switch (w->width) {
    case 1: return p[0];
    case 2: { uint16_t v; memcpy(&v, p, 2); return v; }
    default: { uint32_t v; memcpy(&v, p, 4); return v; }
    }
}

static inline void image_set(watch_t *w, uint32_t i, uint32_t v) {
    uint8_t *p = w->image + (size_t)i * w->width;
    switch (w->width) {
    case 1: p[0] = (uint8_t)v; break;
    case 2: { uint16_t x = (uint16_t)v; memcpy(p, &x, 2); break; }
    default: memcpy(p, &v, 4); break;
    }
}

static void watch_release(watch_t *w) {
    if (--w->refs > 0) return;
    free(w->image);
    free(w);
}

/* Lets go of the JS side (callback, buffer) and of the mapping. */
static void watch_detach(watch_t *w) {
    if (w->map) w->map->watchers--;
    w->map = NULL;
    if (w->callback) napi_delete_reference(w->env, w->callback);
    if (w->buffer) napi_delete_reference(w->env, w->buffer);
    w->callback = w->buffer = NULL;
}

/* The timer runs at the shortest period of the watches that may see something; stops without any. */
static void watch_timer_cb(uv_timer_t *t);
static void watch_timer_update(instance_t *inst) {
    uint64_t period = 0;
    if (!inst->watch_timer_init) return;
    for (watch_t *w = inst->watches; w; w = w->next)
        if (!w->stopped && !w->paused && (period == 0 || w->interval_ms < period)) period = w->interval_ms;
    if (period == inst->watch_interval_ms) return;
    inst->watch_interval_ms = period;
    if (period == 0) uv_timer_stop(&inst->watch_timer);
    else uv_timer_start(&inst->watch_timer, watch_timer_cb, period, period);
}

/* Unlists stopped watches (never while a scan walks the list). */
static void watches_reap(instance_t *inst) {
    if (inst->scanning) return;
    for (watch_t **pw = &inst->watches; *pw;) {
        watch_t *w = *pw;
        if (!w->stopped) {
            pw = &w->next;
            continue;
        }
        *pw = w->next;
        watch_release(w);
    }
}

static void watch_emit(watch_t *w, uint32_t i, uint32_t v) {
    napi_env env = w->env;
    napi_value cb, global, argv[2];
    if (!w->callback || napi_get_reference_value(env, w->callback, &cb) != napi_ok || !cb) return;
    napi_get_global(env, &global);
    argv[0] = make_int(env, (int64_t)i * w->width);
    argv[1] = make_int(env, v);
    napi_status s = napi_make_callback(env, NULL, global, cb, 2, argv, NULL);
    if (s == napi_pending_exception) {
        napi_value ex;
        napi_get_and_clear_last_exception(env, &ex);
        napi_fatal_exception(env, ex);
    }
}

/* One pass over a watch; returns the words that changed. */
static int watch_scan(watch_t *w) {
    int changes = 0;
    napi_handle_scope scope = NULL;
    /* The memory may change under memcmp: a write it misses is seen next time. */
    if (memcmp(w->base, w->image, (size_t)w->count * w->width) == 0) return 0;
    for (uint32_t i = 0; i < w->count && !w->stopped && !w->paused; i++) {
        uint32_t v = watch_load(w, i);
        if (v == image_word(w, i)) continue;
        if (w->rearm) {
            v = watch_swap(w, i, w->rearm_value);
            if (v == w->rearm_value) continue;
        } else {
            image_set(w, i, v);
        }
        if (!scope) napi_open_handle_scope(w->env, &scope);
        changes++;
        watch_emit(w, i, v);
    }
    if (scope) napi_close_handle_scope(w->env, scope);
    if (changes && w->idle_ns) spin_arm(w->inst, w->idle_ns);
    return changes;
}

/* Scans every watch of the thread; returns the words that changed. */
static int watches_scan_count(instance_t *inst) {
    int changes = 0;
    inst->scanning++;
    for (watch_t *w = inst->watches; w; w = w->next)
        if (!w->stopped && !w->paused) changes += watch_scan(w);
    inst->scanning--;
    watches_reap(inst);
    return changes;
}

static void watches_scan(instance_t *inst) { (void)watches_scan_count(inst); }

static void watch_timer_cb(uv_timer_t *t) { watches_scan(t->data); }

/* The environment goes away: every watch stops (their JS handles free them later). */
static void watches_teardown(instance_t *inst) {
    for (watch_t *w = inst->watches; w; w = w->next) {
        w->stopped = true;
        watch_detach(w);
    }
    watches_reap(inst);
}

static void watch_handle_finalize(napi_env env, void *data, void *hint) { watch_release(data); }

#define ARG_WATCH(var, i)                                                      \
    watch_t *var = NULL;                                                       \
    if (!arg_handle(env, FN, argv[i], &WATCH_TAG, "a watch handle (from watchStart)", (void **)&var)) return NULL

/* watchStart(mapHandle, arrayBuffer, offset, length, width, rearm, intervalMs, idleNs, callback(offset, value), keep?) -> handle.
 * Watches `length` bytes at `offset` of the mapping (the ArrayBuffer mmap
 * returned with the handle) as words of `width` bytes (1, 2 or 4; offset
 * and length multiples of it). rearm: undefined to report changes of value
 * (what the words hold now counts as seen), or the value each word is
 * swapped back to after a write (the words are set to it now, unless
 * `keep`: then each word holding anything else is reported by the first
 * scan, a write no one saw: for a successor process taking over memory a
 * peer keeps storing into). The callback gets the offset of the word in
 * the watch and its new value. */
static napi_value js_watch_start(napi_env env, napi_callback_info info) {
    mapping_t *m = NULL;
    instance_t *inst = NULL;
    bool is_ab = false, detached = false;
    void *data = NULL;
    size_t len = 0;
    napi_valuetype t = napi_undefined;
    ARGS(10, "watchStart");
    if (!arg_handle(env, FN, argv[0], &MAPPING_TAG, "a mapping handle (from mmap)", (void **)&m)) return NULL;
    if (napi_is_arraybuffer(env, argv[1], &is_ab) != napi_ok || !is_ab)
        return throw_arg(env, false, FN, "arrayBuffer", -1, "an ArrayBuffer", argv[1]), NULL;
    napi_is_detached_arraybuffer(env, argv[1], &detached);
    if (detached || !m->mapped || m->revoked || napi_get_arraybuffer_info(env, argv[1], &data, &len) != napi_ok || data != m->addr) {
        napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "watchStart: arrayBuffer is not the live mapping mmap returned with this handle");
        return NULL;
    }
    ARG_INT(uint32_t, width, 4, "width", 1, 4, "1, 2 or 4");
    if (width == 3) return throw_arg(env, true, FN, "width", -1, "1, 2 or 4", argv[4]), NULL;
    ARG_INT(int64_t, off, 2, "offset", 0, MAX_SAFE_INT, "an integer >= 0");
    ARG_INT(int64_t, length, 3, "length", 1, (int64_t)WATCH_MAX_WORDS * 4, "an integer in 1..262144");
    if ((uint64_t)off + (uint64_t)length > len || off % width || length % width || length / width > WATCH_MAX_WORDS) {
        char msg[200];
        snprintf(msg, sizeof msg, "watchStart: offset %lld + length %lld must lie in the mapping (%zu bytes), aligned to width %u", (long long)off,
                 (long long)length, len, width);
        napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
        return NULL;
    }
    bool rearm = !is_undefined(env, argv[5]);
    uint32_t rearm_value = 0;
    if (rearm) {
        int64_t max = width == 4 ? UINT32_MAX : ((int64_t)1 << (8 * width)) - 1;
        ARG_INT(uint32_t, r, 5, "rearm", 0, max, "undefined or a word value");
        rearm_value = r;
    }
    ARG_INT(uint64_t, interval_ms, 6, "intervalMs", 1, WATCH_MAX_INTERVAL_MS, "an integer in 1..60000");
    ARG_INT(uint64_t, idle_ns, 7, "idleNs", 0, MAX_SAFE_INT, "an integer >= 0");
    if (napi_typeof(env, argv[8], &t) != napi_ok || t != napi_function)
        return throw_arg(env, false, FN, "callback", -1, "a function", argv[8]), NULL;
    ARG_BOOL(keep, 9, "keep", true);
    napi_get_instance_data(env, (void **)&inst);
    if (!inst) return throw_errno(env, "watchStart: addon not initialised", EINVAL);

    watch_t *w = calloc(1, sizeof *w);
    if (!w) return throw_errno(env, "watchStart", ENOMEM);
    w->count = (uint32_t)(length / width);
    w->image = malloc((size_t)length);
    if (!w->image) {
        free(w);
        return throw_errno(env, "watchStart", ENOMEM);
    }
    w->inst = inst;
    w->env = env;
    w->map = m;
    w->base = (uint8_t *)data + off;
    w->width = (uint8_t)width;
    w->rearm = rearm;
    w->rearm_value = rearm_value;
    w->idle_ns = idle_ns;
    w->interval_ms = interval_ms;
    for (uint32_t i = 0; i < w->count; i++) {
        if (rearm && !keep) watch_put(w, i, rearm_value);
        image_set(w, i, rearm ? rearm_value : watch_load(w, i));
    }
    napi_value handle;
    if (napi_create_reference(env, argv[8], 1, &w->callback) != napi_ok || napi_create_reference(env, argv[1], 1, &w->buffer) != napi_ok ||
        napi_create_external(env, w, watch_handle_finalize, NULL, &handle) != napi_ok) {
        w->map = NULL;
        watch_detach(w);
        free(w->image);
        free(w);
        return throw_errno(env, "watchStart", ENOMEM);
    }
    /* From here the JS handle owns one reference and the list the other. */
    w->refs = 2;
    m->watchers++;
    w->next = inst->watches;
    inst->watches = w;
    CALL(env, napi_type_tag_object(env, handle, &WATCH_TAG));
    watch_timer_update(inst);
    return handle;
}

/* watchStop(handle): stops for good (idempotent); the mapping may be unmapped again. */
static napi_value js_watch_stop(napi_env env, napi_callback_info info) {
    ARGS(1, "watchStop");
    ARG_WATCH(w, 0);
    if (w->stopped) return NULL;
    w->stopped = true;
    watch_detach(w);
    watches_reap(w->inst);
    watch_timer_update(w->inst);
    return NULL;
}

/* watchPause(handle, paused): a paused watch is not scanned; writes meanwhile
 * are seen once it resumes (the words keep them). */
static napi_value js_watch_pause(napi_env env, napi_callback_info info) {
    ARGS(2, "watchPause");
    ARG_WATCH(w, 0);
    ARG_BOOL(paused, 1, "paused", false);
    if (w->stopped) return NULL;
    w->paused = paused;
    watch_timer_update(w->inst);
    return NULL;
}

/* watchStore(handle, offset, value) -> 0 or -EINVAL (stopped, or a rearming
 * watch): writes a word (offset in the watch) of a by-value watch and
 * counts the value as seen, so the write is not reported back. */
static napi_value js_watch_store(napi_env env, napi_callback_info info) {
    ARGS(3, "watchStore");
    ARG_WATCH(w, 0);
    ARG_INT(int64_t, off, 1, "offset", 0, MAX_SAFE_INT, "an integer >= 0");
    int64_t max = w->width == 4 ? UINT32_MAX : ((int64_t)1 << (8 * w->width)) - 1;
    ARG_INT(uint32_t, v, 2, "value", 0, max, "a word value");
    if (off % w->width || off / w->width >= w->count) {
        char msg[160];
        snprintf(msg, sizeof msg, "watchStore: offset %lld must be a multiple of %u below %u", (long long)off, w->width, w->count * w->width);
        napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
        return NULL;
    }
    if (w->stopped || w->rearm) return make_int(env, -EINVAL);
    uint32_t i = (uint32_t)(off / w->width);
    watch_put(w, i, v);
    if (!w->rearm) image_set(w, i, v);
    return make_int(env, 0);
}

/* watchScan() -> words that changed: scans this thread's watches now. */
static napi_value js_watch_scan(napi_env env, napi_callback_info info) {
    instance_t *inst = NULL;
    napi_get_instance_data(env, (void **)&inst);
    /* Not from inside a watch's callback: that scan is still running. */
    return make_int(env, inst && !inst->scanning ? watches_scan_count(inst) : 0);
}

/* memoryFence(): a full barrier (no later load passes an earlier store).
 * For the step "publish where I am, then look once more" against another
 * process doing the mirror image: virtio's avail_event or NO_NOTIFY flag,
 * NVMe's EventIdx. Without it an x86 store may still sit in the store
 * buffer when the load runs, and both sides miss each other. */
static napi_value js_memory_fence(napi_env env, napi_callback_info info) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return NULL;
}

#endif
