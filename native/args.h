/*
 * Argument checks of the muser addon's entry points (included by muser.c
 * only: everything here is static).
 *
 * Every argument is checked before use: a value of the wrong type throws a
 * TypeError, a number that is not an integer or does not fit its C type a
 * RangeError, each naming the function and the argument ("listen: mode must
 * be an integer in 0..0o777, got string"); the entry point then returns NULL.
 * Before these checks, napi's status was ignored and a string reached the
 * kernel as -1 (a socket mode of 07777). Errors of the system call itself
 * still come back as -errno: only misuse throws. A good argument costs one
 * napi call, as before.
 */
#ifndef MUSER_ARGS_H
#define MUSER_ARGS_H

#include <errno.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
    size_t argc = want;
    if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
        napi_throw_error(env, NULL, "N-API call failed: napi_get_cb_info");
        return -1;
    }
    for (size_t i = argc; i < want; i++) napi_get_undefined(env, &argv[i]);
    return 0;
}

#define MAX_SAFE_INT 9007199254740991LL /* Number.MAX_SAFE_INTEGER */

static const char *js_type_name(napi_env env, napi_value v) {
    napi_valuetype t = napi_undefined;
    bool is = false;
    napi_typeof(env, v, &t);
    switch (t) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "boolean";
    case napi_number: return "number";
    case napi_string: return "string";
    case napi_symbol: return "symbol";
    case napi_function: return "function";
    case napi_external: return "external";
    case napi_bigint: return "bigint";
    default:
        if (napi_is_array(env, v, &is) == napi_ok && is) return "array";
        return "object";
    }
}

/* "fn: name[index] must be <want>, got <type>" as a TypeError or RangeError; returns false. */
static bool throw_arg(napi_env env, bool range, const char *fn, const char *name, int index, const char *want, napi_value v) {
    char msg[256], where[64];
    if (index >= 0) snprintf(where, sizeof where, "%s[%d]", name, index);
    else snprintf(where, sizeof where, "%s", name);
    if (range) {
        double d = 0;
        napi_get_value_double(env, v, &d);
        /* a mode reads best in octal */
        if (strstr(want, "0o") && d >= 0 && d <= 0xffffffff && d == (double)(int64_t)d)
            snprintf(msg, sizeof msg, "%s: %s must be %s, got 0o%llo", fn, where, want, (unsigned long long)d);
        else
            snprintf(msg, sizeof msg, "%s: %s must be %s, got %.17g", fn, where, want, d);
        napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    } else {
        snprintf(msg, sizeof msg, "%s: %s must be %s, got %s", fn, where, want, js_type_name(env, v));
        napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    }
    return false;
}

/* An integer Number in [min, max] (both within +-2^53). `want` describes the
 * range for the message; NULL prints it in decimal. */
static bool arg_int(napi_env env, const char *fn, const char *name, int index, napi_value v, int64_t min, int64_t max,
                    const char *want, int64_t *out) {
    double d;
    char range[96];
    if (napi_get_value_double(env, v, &d) == napi_ok && d >= (double)min && d <= (double)max && d == (double)(int64_t)d) {
        *out = (int64_t)d;
        return true;
    }
    if (!want) {
        snprintf(range, sizeof range, "an integer in %lld..%lld", (long long)min, (long long)max);
        want = range;
    }
    napi_valuetype t = napi_undefined;
    napi_typeof(env, v, &t);
    return throw_arg(env, t == napi_number, fn, name, index, want, v);
}

static bool arg_bool(napi_env env, const char *fn, const char *name, napi_value v, bool optional, bool *out) {
    napi_valuetype t = napi_undefined;
    if (optional && napi_typeof(env, v, &t) == napi_ok && t == napi_undefined) {
        *out = false;
        return true;
    }
    if (napi_get_value_bool(env, v, out) == napi_ok) return true;
    return throw_arg(env, false, fn, name, -1, optional ? "a boolean or undefined" : "a boolean", v);
}

static bool arg_buffer(napi_env env, const char *fn, const char *name, int index, napi_value v, void **data, size_t *len) {
    /* napi_get_buffer_info checks the type itself: one napi call on the hot path */
    if (napi_get_buffer_info(env, v, data, len) == napi_ok) return true;
    return throw_arg(env, false, fn, name, index, "a Buffer", v);
}

/* A Uint8Array (a Buffer is one). */
static bool arg_bytes(napi_env env, const char *fn, const char *name, int index, napi_value v, void **data, size_t *len) {
    napi_typedarray_type t;
    napi_value ab;
    size_t off;
    bool is = false;
    if (napi_is_typedarray(env, v, &is) == napi_ok && is &&
        napi_get_typedarray_info(env, v, &t, len, data, &ab, &off) == napi_ok && t == napi_uint8_array)
        return true;
    return throw_arg(env, false, fn, name, index, "a Uint8Array", v);
}

static bool arg_string(napi_env env, const char *fn, const char *name, napi_value v, char *buf, size_t size, size_t *len) {
    if (napi_get_value_string_utf8(env, v, buf, size, len) == napi_ok) return true;
    return throw_arg(env, false, fn, name, -1, "a string", v);
}

/* An array of at most `max` elements; its length in *n. */
static bool arg_array(napi_env env, const char *fn, const char *name, napi_value v, uint32_t max, const char *want, uint32_t *n) {
    bool is = false;
    if (napi_is_array(env, v, &is) != napi_ok || !is || napi_get_array_length(env, v, n) != napi_ok)
        return throw_arg(env, false, fn, name, -1, want, v);
    if (*n <= max) return true;
    char msg[160];
    snprintf(msg, sizeof msg, "%s: %s may hold at most %u elements, got %u", fn, name, max, *n);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return false;
}

static bool is_undefined(napi_env env, napi_value v) {
    napi_valuetype t = napi_null;
    return napi_typeof(env, v, &t) == napi_ok && t == napi_undefined;
}

/* Entry points name themselves in messages through FN, and read their
 * arguments into locals with these (each returns NULL from the entry point
 * on a bad argument, an exception pending). */
#define ARGS(n, jsname)                                                        \
    napi_value argv[n];                                                        \
    static const char FN[] = jsname;                                           \
    if (get_args(env, info, (n), argv) < 0) return NULL

#define ARG_INT(type, var, i, name, min, max, want)                            \
    type var;                                                                  \
    do {                                                                       \
        int64_t v_ = 0;                                                        \
        if (!arg_int(env, FN, (name), -1, argv[i], (min), (max), (want), &v_)) \
            return NULL;                                                       \
        var = (type)v_;                                                        \
    } while (0)

/* An fd: any int; a closed or negative one is the kernel's EBADF, returned as -errno. */
#define ARG_FD(var, i) ARG_INT(int, var, i, "fd", INT32_MIN, INT32_MAX, "a 32-bit integer")
/* An int64 offset, length or size: any safe integer; the callee says what it accepts. */
#define ARG_I64(var, i, name) ARG_INT(int64_t, var, i, name, -MAX_SAFE_INT, MAX_SAFE_INT, "a safe integer")
#define ARG_BOOL(var, i, name, optional)                                       \
    bool var = false;                                                          \
    if (!arg_bool(env, FN, (name), argv[i], (optional), &var)) return NULL

/* A socket path: 0, -errno (empty, too long), or 1 with a TypeError pending. */
static int arg_path(napi_env env, const char *fn, napi_value v, struct sockaddr_un *sa) {
    size_t len = 0;
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
        throw_arg(env, false, fn, "path", -1, "a string", v);
        return 1;
    }
    if (len == 0) return -ENOENT;
    if (len >= sizeof sa->sun_path) return -ENAMETOOLONG;
    napi_get_value_string_utf8(env, v, sa->sun_path, sizeof sa->sun_path, &len);
    if (strlen(sa->sun_path) != len) {
        /* "a\0b" would bind "a" */
        char msg[128];
        snprintf(msg, sizeof msg, "%s: path must be a string without null bytes", fn);
        napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
        return 1;
    }
    return 0;
}

#endif
