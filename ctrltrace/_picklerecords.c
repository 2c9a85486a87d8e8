/* ctrltrace._picklerecords: the journal's record pickler, in C (an optional accelerator).
 *
 * Writes exactly the bytes of the Python writer in ctrltrace/picklerecords.py, which owns the
 * encoding and documents it: a record as a tuple of its fields (RECORD_FIELDS there,
 * record_names here), its ObjectRef as a tuple, its Stage and any other value that is not
 * exactly a built-in scalar, tuple, list or dict as its str(); pickle protocol 5 opcodes
 * without frames; non-empty strings and ObjectRefs memoised by identity within one pickle.
 * tests/unit/test_picklerecords.py holds the two to the same bytes.
 *
 * Why C: sealing a chunk runs on the event loop for every 128 records, and a Python pass over
 * every field of every record is most of what the journal costs per event there. Fields are
 * read through the public attribute protocol, by interned name, once the record's type is
 * checked; nothing of CPython's internal structures is read.
 *
 * It may not: do I/O, keep state between calls, or write an opcode that names a class (the
 * reader refuses every global but str and tuple, and needs neither).
 */
#include "_buffer.h"

/* Pickle opcodes used here. */
#define OP_PROTO 0x80
#define OP_STOP '.'
#define OP_MARK '('
#define OP_NONE 'N'
#define OP_NEWTRUE 0x88
#define OP_NEWFALSE 0x89
#define OP_BININT 'J'
#define OP_BININT1 'K'
#define OP_BININT2 'M'
#define OP_LONG1 0x8a
#define OP_BINFLOAT 'G'
#define OP_SHORT_BINUNICODE 0x8c
#define OP_BINUNICODE 'X'
#define OP_BINUNICODE8 0x8d
#define OP_EMPTY_TUPLE ')'
#define OP_TUPLE 't'
#define OP_TUPLE1 0x85
#define OP_EMPTY_LIST ']'
#define OP_APPENDS 'e'
#define OP_EMPTY_DICT '}'
#define OP_SETITEMS 'u'
#define OP_MEMOIZE 0x94
#define OP_BINGET 'h'
#define OP_LONG_BINGET 'j'

#define RECORD_FIELDS 11
#define REF_FIELDS 7
#define FIELD_TIME 1
#define FIELD_STAGE 2
#define FIELD_OBJECT 6
#define FIELD_REQUEST 7
#define REF_NAME 3

/* Record's fields in stored order, and ObjectRef's: picklerecords.RECORD_FIELDS and
 * REF_FIELDS. */
static const char *record_names[RECORD_FIELDS] = {
    "id", "time", "stage", "outcome", "reason", "controller", "object", "request",
    "reconcile_id", "cause_ids", "attrs",
};
static const char *ref_names[REF_FIELDS] = {
    "api_version", "kind", "namespace", "name", "uid", "resource_version", "generation",
};

typedef struct {
    PyTypeObject *record_type;
    PyTypeObject *ref_type;
    /* The fields' names, interned: attribute lookups by them hit the type's cache. */
    PyObject *record_fields[RECORD_FIELDS];
    PyObject *ref_fields[REF_FIELDS];
} module_state;

typedef struct {
    PyObject *key; /* held until the pickle is done, so its address stays its own; NULL: free */
    Py_ssize_t index;
} memo_entry;

typedef struct {
    buffer out;
    memo_entry *memo; /* open addressing by object address, as the pickle module's memo */
    Py_ssize_t memo_capacity;
    Py_ssize_t memoised;
    module_state *state;
} writer;

static inline int put_op(writer *w, unsigned char op) { return put_byte(&w->out, op); }

static inline int put_bytes(writer *w, const void *bytes, Py_ssize_t length) {
    return put(&w->out, bytes, length);
}

static memo_entry *memo_slot(memo_entry *memo, Py_ssize_t capacity, PyObject *key) {
    size_t at = ((size_t)key >> 4) * 0x9E3779B97F4A7C15ULL;
    for (;; at++) {
        memo_entry *entry = &memo[at & (size_t)(capacity - 1)];
        if (entry->key == key || entry->key == NULL) {
            return entry;
        }
    }
}

/* A memo reference to ``key`` if it was written before: 1 if so, 0 if not. */
static int put_memoised(writer *w, PyObject *key) {
    memo_entry *entry = memo_slot(w->memo, w->memo_capacity, key);
    if (entry->key == NULL) {
        return 0;
    }
    unsigned char op[5];
    if (entry->index < 256) {
        op[0] = OP_BINGET;
        op[1] = (unsigned char)entry->index;
        return put_bytes(w, op, 2) < 0 ? -1 : 1;
    }
    op[0] = OP_LONG_BINGET;
    little_endian(op + 1, (unsigned long long)entry->index, 4);
    return put_bytes(w, op, 5) < 0 ? -1 : 1;
}

/* MEMOIZE the object just written, under ``key``. */
static int memoise(writer *w, PyObject *key) {
    if (2 * (w->memoised + 1) > w->memo_capacity) {
        Py_ssize_t capacity = w->memo_capacity * 2;
        memo_entry *memo = PyMem_Calloc((size_t)capacity, sizeof(memo_entry));
        if (memo == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < w->memo_capacity; i++) {
            if (w->memo[i].key != NULL) {
                *memo_slot(memo, capacity, w->memo[i].key) = w->memo[i];
            }
        }
        PyMem_Free(w->memo);
        w->memo = memo;
        w->memo_capacity = capacity;
    }
    memo_entry *entry = memo_slot(w->memo, w->memo_capacity, key);
    entry->key = Py_NewRef(key);
    entry->index = w->memoised++;
    return put_op(w, OP_MEMOIZE);
}

/* A str, memoised under ``key``: the str itself, or the object it was made from. */
static int save_text(writer *w, PyObject *text, PyObject *key) {
    Py_ssize_t length;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &length);
    if (utf8 == NULL) {
        return -1;
    }
    if (length == 0) {
        unsigned char empty[2] = {OP_SHORT_BINUNICODE, 0};
        return put_bytes(w, empty, 2);
    }
    int found = put_memoised(w, key);
    if (found != 0) {
        return found < 0 ? -1 : 0;
    }
    unsigned char head[9];
    Py_ssize_t head_size;
    if (length < 256) {
        head[0] = OP_SHORT_BINUNICODE;
        head[1] = (unsigned char)length;
        head_size = 2;
    } else if (length <= 0xffffffffLL) {
        head[0] = OP_BINUNICODE;
        little_endian(head + 1, (unsigned long long)length, 4);
        head_size = 5;
    } else {
        head[0] = OP_BINUNICODE8;
        little_endian(head + 1, (unsigned long long)length, 8);
        head_size = 9;
    }
    if (put_bytes(w, head, head_size) < 0 || put_bytes(w, utf8, length) < 0) {
        return -1;
    }
    return memoise(w, key);
}

static int save_int(writer *w, PyObject *number) {
    int overflow;
    long long value = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    unsigned char out[10];
    if (overflow == 0) {
        if (value >= 0 && value < 256) {
            out[0] = OP_BININT1;
            out[1] = (unsigned char)value;
            return put_bytes(w, out, 2);
        }
        if (value >= 0 && value < 65536) {
            out[0] = OP_BININT2;
            little_endian(out + 1, (unsigned long long)value, 2);
            return put_bytes(w, out, 3);
        }
        if (value >= INT32_MIN && value <= INT32_MAX) {
            out[0] = OP_BININT;
            little_endian(out + 1, (unsigned long long)value, 4);
            return put_bytes(w, out, 5);
        }
        out[0] = OP_LONG1;
        out[1] = 8;
        little_endian(out + 2, (unsigned long long)value, 8);
        return put_bytes(w, out, 10);
    }
    /* Past 64 bits (rare): the int's own little-endian two's complement bytes. */
    PyObject *bits = PyObject_CallMethod(number, "bit_length", NULL);
    if (bits == NULL) {
        return -1;
    }
    Py_ssize_t size = PyLong_AsSsize_t(bits) / 8 + 1;
    Py_DECREF(bits);
    if (size > 255) {
        PyErr_SetString(PyExc_OverflowError, "an int in a record is too large for the journal");
        return -1;
    }
    PyObject *to_bytes = PyObject_GetAttrString(number, "to_bytes");
    if (to_bytes == NULL) {
        return -1;
    }
    PyObject *args = Py_BuildValue("(ns)", size, "little");
    PyObject *kwargs = Py_BuildValue("{s:O}", "signed", Py_True);
    PyObject *encoded = args && kwargs ? PyObject_Call(to_bytes, args, kwargs) : NULL;
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    Py_DECREF(to_bytes);
    if (encoded == NULL) {
        return -1;
    }
    out[0] = OP_LONG1;
    out[1] = (unsigned char)size;
    int failed = put_bytes(w, out, 2) < 0 || put_bytes(w, PyBytes_AS_STRING(encoded), size) < 0;
    Py_DECREF(encoded);
    return failed ? -1 : 0;
}

static int save_float(writer *w, PyObject *number) {
    unsigned char out[9];
    out[0] = OP_BINFLOAT;
    if (PyFloat_Pack8(PyFloat_AS_DOUBLE(number), (char *)out + 1, 0) < 0) {
        return -1;
    }
    return put_bytes(w, out, 9);
}

static int save(writer *w, PyObject *value);

/* A tuple of ``count`` items, each saved as ``save`` would. */
static int save_items_as_tuple(writer *w, PyObject **items, Py_ssize_t count) {
    if (count == 0) {
        return put_op(w, OP_EMPTY_TUPLE);
    }
    if (count > 3 && put_op(w, OP_MARK) < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (save(w, items[i]) < 0) {
            return -1;
        }
    }
    return put_op(w, count > 3 ? OP_TUPLE : (unsigned char)(OP_TUPLE1 + count - 1));
}

/* Read ``count`` attributes ``names`` of ``owner`` (new references). */
static int read_fields(PyObject *owner, PyObject *const *names, PyObject **out,
                       Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++) {
        out[i] = PyObject_GetAttr(owner, names[i]);
        if (out[i] == NULL) {
            while (i-- > 0) {
                Py_DECREF(out[i]);
            }
            return -1;
        }
    }
    return 0;
}

static void release(PyObject **items, Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_DECREF(items[i]);
    }
}

static int save_ref(writer *w, PyObject *ref) {
    int found = put_memoised(w, ref);
    if (found == 0) {
        PyObject *fields[REF_FIELDS];
        found = read_fields(ref, w->state->ref_fields, fields, REF_FIELDS);
        if (found == 0) {
            found = save_items_as_tuple(w, fields, REF_FIELDS);
            release(fields, REF_FIELDS);
        }
        if (found == 0) {
            found = memoise(w, ref);
        }
    }
    return found < 0 ? -1 : 0;
}

static int save_list(writer *w, PyObject *list) {
    if (put_op(w, OP_EMPTY_LIST) < 0) {
        return -1;
    }
    Py_ssize_t count = PyList_GET_SIZE(list);
    if (count == 0) {
        return 0;
    }
    if (put_op(w, OP_MARK) < 0) {
        return -1;
    }
    int failed = 0;
    for (Py_ssize_t i = 0; !failed && i < PyList_GET_SIZE(list); i++) {
        PyObject *item = Py_NewRef(PyList_GET_ITEM(list, i)); /* held, as in save_dict */
        failed = save(w, item) < 0;
        Py_DECREF(item);
    }
    return failed ? -1 : put_op(w, OP_APPENDS);
}

static int save_dict(writer *w, PyObject *dict) {
    if (put_op(w, OP_EMPTY_DICT) < 0) {
        return -1;
    }
    if (PyDict_GET_SIZE(dict) == 0) {
        return 0;
    }
    if (put_op(w, OP_MARK) < 0) {
        return -1;
    }
    Py_ssize_t position = 0;
    PyObject *key, *value;
    int failed = 0;
    while (!failed && PyDict_Next(dict, &position, &key, &value)) {
        /* Held: str() of a value is Python code, which could drop them from the dict. */
        Py_INCREF(key);
        Py_INCREF(value);
        failed = save(w, key) < 0 || save(w, value) < 0;
        Py_DECREF(key);
        Py_DECREF(value);
    }
    return failed ? -1 : put_op(w, OP_SETITEMS);
}

/* Anything else is written as its str(), once per object (a Stage, say). */
static int save_as_str(writer *w, PyObject *value) {
    int found = put_memoised(w, value);
    if (found == 0) {
        PyObject *text = PyObject_Str(value);
        found = text == NULL ? -1 : save_text(w, text, value);
        Py_XDECREF(text);
    }
    return found < 0 ? -1 : 0;
}

static int save(writer *w, PyObject *value) {
    PyTypeObject *type = Py_TYPE(value);
    if (value == Py_None) {
        return put_op(w, OP_NONE);
    }
    if (value == Py_True || value == Py_False) {
        return put_op(w, value == Py_True ? OP_NEWTRUE : OP_NEWFALSE);
    }
    if (type == &PyUnicode_Type) {
        return save_text(w, value, value);
    }
    if (type == &PyLong_Type) {
        return save_int(w, value);
    }
    if (type == &PyFloat_Type) {
        return save_float(w, value);
    }
    if (type == w->state->ref_type) {
        return save_ref(w, value);
    }
    if (Py_EnterRecursiveCall(" while writing a record to the journal")) {
        return -1;
    }
    int done;
    if (type == &PyTuple_Type) {
        done = save_items_as_tuple(w, &PyTuple_GET_ITEM(value, 0), PyTuple_GET_SIZE(value));
    } else if (type == &PyList_Type) {
        done = save_list(w, value);
    } else if (type == &PyDict_Type) {
        done = save_dict(w, value);
    } else {
        done = save_as_str(w, value);
    }
    Py_LeaveRecursiveCall();
    return done;
}

/* One record as its fields tuple; ``fields`` receives new references to its fields. */
static int save_record(writer *w, PyObject *record, PyObject **fields) {
    if (Py_TYPE(record) != w->state->record_type) {
        PyErr_Format(PyExc_TypeError, "the journal stores Records, not %.100s",
                     Py_TYPE(record)->tp_name);
        return -1;
    }
    if (read_fields(record, w->state->record_fields, fields, RECORD_FIELDS) < 0) {
        return -1;
    }
    if (save_items_as_tuple(w, fields, RECORD_FIELDS) < 0) {
        release(fields, RECORD_FIELDS);
        return -1;
    }
    return 0;
}

static int start(writer *w, module_state *state) {
    w->state = state;
    w->memoised = 0;
    w->memo_capacity = 1024;
    w->memo = PyMem_Calloc((size_t)w->memo_capacity, sizeof(memo_entry));
    if (w->memo == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (buffer_start(&w->out, 16384) < 0) {
        PyMem_Free(w->memo);
        return -1;
    }
    unsigned char proto[2] = {OP_PROTO, 5};
    return put_bytes(w, proto, 2);
}

/* The pickle written so far, ended; the writer is spent either way. */
static PyObject *finish(writer *w, int failed) {
    for (Py_ssize_t i = 0; i < w->memo_capacity; i++) {
        Py_XDECREF(w->memo[i].key);
    }
    PyMem_Free(w->memo);
    return buffer_finish(&w->out, failed || put_op(w, OP_STOP) < 0);
}

PyDoc_STRVAR(dumps_doc,
             "dumps(record, /)\n--\n\n"
             "One record as the journal stores it: the pickle of its fields tuple.");

static PyObject *dumps(PyObject *module, PyObject *record) {
    writer w;
    if (start(&w, PyModule_GetState(module)) < 0) {
        return NULL;
    }
    PyObject *fields[RECORD_FIELDS];
    int failed = save_record(&w, record, fields) < 0;
    if (!failed) {
        release(fields, RECORD_FIELDS);
    }
    return finish(&w, failed);
}

/* Add a chunk's keys for one record: its request and its object's name, when not empty. */
static int add_keys(module_state *state, PyObject *keys, PyObject **fields) {
    PyObject *request = fields[FIELD_REQUEST];
    if (PyUnicode_Check(request) && PyUnicode_GET_LENGTH(request) && PySet_Add(keys, request)) {
        return -1;
    }
    PyObject *ref = fields[FIELD_OBJECT];
    if (Py_TYPE(ref) != state->ref_type) {
        return 0;
    }
    PyObject *name = PyObject_GetAttr(ref, state->ref_fields[REF_NAME]);
    if (name == NULL) {
        return -1;
    }
    int failed = PyUnicode_Check(name) && PyUnicode_GET_LENGTH(name) && PySet_Add(keys, name);
    Py_DECREF(name);
    return failed ? -1 : 0;
}

PyDoc_STRVAR(seal_doc,
             "seal(records, health, /)\n--\n\n"
             "A chunk of records as the journal stores it: (body, first time, last time, keys,\n"
             "health). body is the pickle of the list of their fields tuples; keys the set of\n"
             "requests and object names they mention; health the indices of the records whose\n"
             "stage is in ``health``.");

static PyObject *seal(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "seal(records: list[Record], health: frozenset[Stage])");
        return NULL;
    }
    PyObject *records = args[0], *health_stages = args[1];
    Py_ssize_t count = PyList_GET_SIZE(records);
    if (count == 0) {
        PyErr_SetString(PyExc_ValueError, "seal needs at least one record");
        return NULL;
    }
    module_state *state = PyModule_GetState(module);
    PyObject *keys = PySet_New(NULL);
    PyObject *health = PyList_New(0);
    writer w;
    if (keys == NULL || health == NULL || start(&w, state) < 0) {
        Py_XDECREF(keys);
        Py_XDECREF(health);
        return NULL;
    }
    double first = 0.0, last = 0.0;
    int failed = put_op(&w, OP_EMPTY_LIST) < 0 || put_op(&w, OP_MARK) < 0;
    for (Py_ssize_t i = 0; !failed && i < count; i++) {
        PyObject *fields[RECORD_FIELDS];
        if (save_record(&w, PyList_GET_ITEM(records, i), fields) < 0) {
            failed = 1;
            break;
        }
        double time = PyFloat_AsDouble(fields[FIELD_TIME]);
        failed = time == -1.0 && PyErr_Occurred();
        if (i == 0 || time < first) {
            first = time;
        }
        if (i == 0 || time > last) {
            last = time;
        }
        failed = failed || add_keys(state, keys, fields) < 0;
        int unhealthy = failed ? 0 : PySet_Contains(health_stages, fields[FIELD_STAGE]);
        if (unhealthy < 0) {
            failed = 1;
        } else if (unhealthy) {
            PyObject *index = PyLong_FromSsize_t(i);
            failed = index == NULL || PyList_Append(health, index) < 0;
            Py_XDECREF(index);
        }
        release(fields, RECORD_FIELDS);
    }
    failed = failed || put_op(&w, OP_APPENDS) < 0;
    PyObject *body = finish(&w, failed);
    if (body == NULL) {
        Py_DECREF(keys);
        Py_DECREF(health);
        return NULL;
    }
    return Py_BuildValue("(NddNN)", body, first, last, keys, health);
}

static PyMethodDef methods[] = {
    {"dumps", (PyCFunction)dumps, METH_O, dumps_doc},
    {"seal", (PyCFunction)(void (*)(void))seal, METH_FASTCALL, seal_doc},
    {NULL, NULL, 0, NULL},
};

/* ``names`` as interned strings in ``out``. */
static int intern_names(const char **names, PyObject **out, int count) {
    for (int i = 0; i < count; i++) {
        out[i] = PyUnicode_InternFromString(names[i]);
        if (out[i] == NULL) {
            return -1;
        }
    }
    return 0;
}

static int exec_module(PyObject *module) {
    module_state *state = PyModule_GetState(module);
    PyObject *records = PyImport_ImportModule("ctrltrace.records");
    if (records == NULL) {
        return -1;
    }
    state->record_type = (PyTypeObject *)PyObject_GetAttrString(records, "Record");
    state->ref_type = (PyTypeObject *)PyObject_GetAttrString(records, "ObjectRef");
    Py_DECREF(records);
    if (state->record_type == NULL || state->ref_type == NULL) {
        return -1;
    }
    if (intern_names(record_names, state->record_fields, RECORD_FIELDS) < 0 ||
        intern_names(ref_names, state->ref_fields, REF_FIELDS) < 0) {
        return -1;
    }
    return 0;
}

static int traverse(PyObject *module, visitproc visit, void *arg) {
    module_state *state = PyModule_GetState(module);
    Py_VISIT(state->record_type);
    Py_VISIT(state->ref_type);
    return 0;
}

static int clear(PyObject *module) {
    module_state *state = PyModule_GetState(module);
    Py_CLEAR(state->record_type);
    Py_CLEAR(state->ref_type);
    for (int i = 0; i < RECORD_FIELDS; i++) {
        Py_CLEAR(state->record_fields[i]);
    }
    for (int i = 0; i < REF_FIELDS; i++) {
        Py_CLEAR(state->ref_fields[i]);
    }
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ctrltrace._picklerecords",
    .m_doc = "The journal's record pickler, in C: ctrltrace.picklerecords' accelerator.",
    .m_size = sizeof(module_state),
    .m_methods = methods,
    .m_slots = slots,
    .m_traverse = traverse,
    .m_clear = clear,
};

PyMODINIT_FUNC PyInit__picklerecords(void) { return PyModuleDef_Init(&module_def); }
