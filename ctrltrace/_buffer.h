/* A growing byte buffer for ctrltrace's C encoders (_picklerecords, exporters/_otlpwire).
 *
 * Owns memory only: appending bytes, growing by doubling, and handing the result over as a
 * bytes object. Every function returns -1 with a Python exception set when memory runs out.
 */
#ifndef CTRLTRACE_BUFFER_H
#define CTRLTRACE_BUFFER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} buffer;

static int buffer_start(buffer *b, Py_ssize_t capacity) {
    b->size = 0;
    b->capacity = capacity;
    b->data = PyMem_Malloc((size_t)capacity);
    if (b->data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int buffer_grow(buffer *b, Py_ssize_t more) {
    Py_ssize_t capacity = b->capacity * 2;
    while (capacity < b->size + more) {
        capacity *= 2;
    }
    char *data = PyMem_Realloc(b->data, (size_t)capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->capacity = capacity;
    return 0;
}

/* Room for ``more`` bytes at the end. */
static inline int buffer_reserve(buffer *b, Py_ssize_t more) {
    return b->size + more > b->capacity ? buffer_grow(b, more) : 0;
}

static inline int put(buffer *b, const void *bytes, Py_ssize_t length) {
    if (buffer_reserve(b, length) < 0) {
        return -1;
    }
    memcpy(b->data + b->size, bytes, (size_t)length);
    b->size += length;
    return 0;
}

static inline int put_byte(buffer *b, unsigned char byte) {
    if (buffer_reserve(b, 1) < 0) {
        return -1;
    }
    b->data[b->size++] = (char)byte;
    return 0;
}

static inline void little_endian(unsigned char *out, unsigned long long value, int bytes) {
    for (int i = 0; i < bytes; i++) {
        out[i] = (unsigned char)(value >> (8 * i));
    }
}

/* The buffer's bytes (NULL if ``failed`` or out of memory); the buffer is freed either way. */
static PyObject *buffer_finish(buffer *b, int failed) {
    PyObject *bytes = failed ? NULL : PyBytes_FromStringAndSize(b->data, b->size);
    PyMem_Free(b->data);
    b->data = NULL;
    return bytes;
}

#endif
