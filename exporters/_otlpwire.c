/* ctrltrace.exporters._otlpwire: the OTLP protobuf wire format, in C (an optional accelerator).
 *
 * Writes exactly the bytes of the Python functions in exporters/otlpwire.py, which own the
 * encoding: a Span message from a span's parts (encode_span), repeated KeyValue fields from a
 * mapping of attributes (encode_attributes), and payloads as repeated length-delimited fields
 * (encode_fields); that is what the OpenTelemetry SDK's protobuf encoder writes for the same
 * span. tests/unit/test_otlp_proto.py holds all three to the same bytes.
 *
 * Why C: the span sink encodes every span as it ends, on the event loop, and in Python that is
 * a bytes join per field and a dict lookup per attribute. Span contexts, events, links and
 * statuses are read through their public attributes.
 *
 * It may not: send anything, read the environment, or know what the attributes mean.
 */
#include "_buffer.h"

/* Field tags (field number << 3 | wire type) of the messages written here. */
#define SPAN_TRACE_ID 0x0a
#define SPAN_SPAN_ID 0x12
#define SPAN_TRACE_STATE 0x1a
#define SPAN_PARENT_SPAN_ID 0x22
#define SPAN_NAME 0x2a
#define SPAN_KIND 0x30
#define SPAN_START 0x39
#define SPAN_END 0x41
#define SPAN_ATTRIBUTES 0x4a
#define SPAN_DROPPED_ATTRIBUTES 0x50
#define SPAN_EVENTS 0x5a
#define SPAN_DROPPED_EVENTS 0x60
#define SPAN_LINKS 0x6a
#define SPAN_DROPPED_LINKS 0x70
#define SPAN_STATUS 0x7a
#define EVENT_TIME 0x09
#define EVENT_NAME 0x12
#define EVENT_ATTRIBUTES 0x1a
#define EVENT_DROPPED_ATTRIBUTES 0x20
#define LINK_TRACE_ID 0x0a
#define LINK_SPAN_ID 0x12
#define LINK_TRACE_STATE 0x1a
#define LINK_ATTRIBUTES 0x22
#define LINK_DROPPED_ATTRIBUTES 0x28
#define LINK_FLAGS 0x35
#define STATUS_MESSAGE 0x12
#define STATUS_CODE 0x18
#define KEY_VALUE_KEY 0x0a
#define KEY_VALUE_VALUE 0x12
#define ANY_STRING 0x0a
#define ANY_BOOL 0x10
#define ANY_INT 0x18
#define ANY_DOUBLE 0x21
#define ANY_ARRAY 0x2a
#define ANY_KVLIST 0x32
#define ANY_BYTES 0x3a
#define LIST_ITEM 0x0a /* ArrayValue.values and KeyValueList.values */

/* SpanFlags: the context says whether its parent was remote (bit 8), and if so bit 9. */
#define HAS_IS_REMOTE 0x100
#define IS_REMOTE 0x200

/* The SpanContext attributes read here, in the order of module_state.context_names. */
#define CONTEXT_TRACE_ID 0
#define CONTEXT_SPAN_ID 1
#define CONTEXT_IS_REMOTE 2
#define CONTEXT_TRACE_STATE 3
#define CONTEXT_NAMES 4
static const char *const context_names[CONTEXT_NAMES] = {"trace_id", "span_id", "is_remote",
                                                         "trace_state"};

/* An enum's members and the number each is written as, found by identity: an Enum's hash is
 * a Python call. */
#define MAX_MEMBERS 8
typedef struct {
    PyObject *members[MAX_MEMBERS];
    unsigned long numbers[MAX_MEMBERS];
    int count;
} numbering;

typedef struct {
    numbering kinds;    /* SpanKind: OTLP's numbers start at 1, the API's at 0 */
    numbering statuses; /* StatusCode */
    /* The last status written and its field: nearly every span has the one unset status. */
    PyObject *status;
    PyObject *status_field;
    PyObject *context_type; /* opentelemetry.trace.SpanContext */
    PyObject *context_names[CONTEXT_NAMES]; /* interned */
} module_state;

/* ``value`` as a varint at ``out`` (room for ten bytes); how many bytes it took. */
static int varint_at(unsigned char *out, unsigned long long value) {
    int length = 0;
    while (value >= 0x80) {
        out[length++] = (unsigned char)(value | 0x80);
        value >>= 7;
    }
    out[length++] = (unsigned char)value;
    return length;
}

/* The number ``member`` is written as; -1 with ValueError if it is not one of the enum's. */
static long number_of(const numbering *numbers, PyObject *member, const char *what) {
    for (int i = 0; i < numbers->count; i++) {
        if (numbers->members[i] == member) {
            return (long)numbers->numbers[i];
        }
    }
    PyErr_Format(PyExc_ValueError, "unknown %s: %R", what, member);
    return -1;
}

static int put_varint(buffer *b, unsigned long long value) {
    if (buffer_reserve(b, 10) < 0) {
        return -1;
    }
    b->size += varint_at((unsigned char *)b->data + b->size, value);
    return 0;
}

static int put_fixed(buffer *b, unsigned long long value, int bytes) {
    if (buffer_reserve(b, bytes) < 0) {
        return -1;
    }
    little_endian((unsigned char *)b->data + b->size, value, bytes);
    b->size += bytes;
    return 0;
}

/* A length-delimited field is written as: tag, one byte kept for the length, the payload;
 * ``close_field`` then writes the length, moving the payload on when it needs more bytes. */
static Py_ssize_t open_field(buffer *b, unsigned char tag) {
    if (put_byte(b, tag) < 0 || put_byte(b, 0) < 0) {
        return -1;
    }
    return b->size;
}

static int close_field(buffer *b, Py_ssize_t start) {
    Py_ssize_t length = b->size - start;
    if (length < 0x80) {
        b->data[start - 1] = (char)length;
        return 0;
    }
    int extra = 0;
    for (Py_ssize_t rest = length >> 7; rest; rest >>= 7) {
        extra++;
    }
    if (buffer_reserve(b, extra) < 0) {
        return -1;
    }
    memmove(b->data + start + extra, b->data + start, (size_t)length);
    varint_at((unsigned char *)b->data + start - 1, (unsigned long long)length);
    b->size += extra;
    return 0;
}

static int put_delimited(buffer *b, unsigned char tag, const char *bytes, Py_ssize_t length) {
    if (put_byte(b, tag) < 0 || put_varint(b, (unsigned long long)length) < 0) {
        return -1;
    }
    return put(b, bytes, length);
}

static int put_text(buffer *b, unsigned char tag, PyObject *text) {
    Py_ssize_t length;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &length);
    return utf8 == NULL ? -1 : put_delimited(b, tag, utf8, length);
}

/* An int as its 64-bit two's complement (protobuf's int64 and fixed64). */
static int as_u64(PyObject *number, unsigned long long *out) {
    int overflow;
    long long value = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow == 0) {
        *out = (unsigned long long)value;
        return 0;
    }
    *out = PyLong_AsUnsignedLongLong(number);
    return *out == (unsigned long long)-1 && PyErr_Occurred() ? -1 : 0;
}

/* An unsigned id of ``bytes`` (8 or 16) bytes, big-endian, as a field under ``tag``. */
static int put_big_endian(buffer *b, unsigned char tag, PyObject *id, int bytes) {
    if (!PyLong_Check(id)) {
        PyErr_SetString(PyExc_TypeError, "trace and span ids are ints");
        return -1;
    }
    unsigned long long high = 0, low;
    if (bytes == 16) {
        PyObject *shift = PyLong_FromLong(64);
        PyObject *upper = shift == NULL ? NULL : PyNumber_Rshift(id, shift);
        Py_XDECREF(shift);
        if (upper == NULL) {
            return -1;
        }
        high = PyLong_AsUnsignedLongLong(upper);
        Py_DECREF(upper);
        low = high == (unsigned long long)-1 && PyErr_Occurred() ? 0
                                                                 : PyLong_AsUnsignedLongLongMask(id);
    } else {
        low = PyLong_AsUnsignedLongLong(id);
    }
    if (PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_SetString(PyExc_OverflowError, "a trace or span id is out of range");
        }
        return -1;
    }
    unsigned char out[18];
    out[0] = tag;
    out[1] = (unsigned char)bytes;
    for (int i = 0; i < 8; i++) {
        out[1 + bytes - i] = (unsigned char)(low >> (8 * i));
        if (bytes == 16) {
            out[1 + 8 - i] = (unsigned char)(high >> (8 * i));
        }
    }
    return put(b, out, bytes + 2);
}

static int put_value(buffer *b, PyObject *value);

/* One KeyValue's fields: the key (any object, as its str()) and the value. */
static int put_pair(buffer *b, PyObject *key, PyObject *value) {
    int failed;
    if (PyUnicode_Check(key)) {
        failed = put_text(b, KEY_VALUE_KEY, key);
    } else {
        PyObject *text = PyObject_Str(key);
        failed = text == NULL || put_text(b, KEY_VALUE_KEY, text) < 0;
        Py_XDECREF(text);
    }
    Py_ssize_t start = failed ? -1 : open_field(b, KEY_VALUE_VALUE);
    if (start < 0 || put_value(b, value) < 0) {
        return -1;
    }
    return close_field(b, start);
}

/* Each (key, value) of ``mapping`` as a KeyValue field under ``tag``. */
static int put_attributes(buffer *b, unsigned char tag, PyObject *mapping) {
    if (mapping == Py_None) {
        return 0;
    }
    if (PyDict_Check(mapping)) {
        Py_ssize_t position = 0;
        PyObject *key, *value;
        int failed = 0;
        while (!failed && PyDict_Next(mapping, &position, &key, &value)) {
            /* Held: a key's __str__ is Python code, which could drop them from the dict. */
            Py_INCREF(key);
            Py_INCREF(value);
            Py_ssize_t start = open_field(b, tag);
            failed = start < 0 || put_pair(b, key, value) < 0 || close_field(b, start) < 0;
            Py_DECREF(key);
            Py_DECREF(value);
        }
        return failed ? -1 : 0;
    }
    PyObject *items = PyMapping_Items(mapping);
    if (items == NULL) {
        return -1;
    }
    int failed = 0;
    for (Py_ssize_t i = 0; !failed && i < PyList_GET_SIZE(items); i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        Py_ssize_t start = open_field(b, tag);
        failed = start < 0 ||
                 put_pair(b, PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1)) < 0 ||
                 close_field(b, start) < 0;
    }
    Py_DECREF(items);
    return failed ? -1 : 0;
}

/* An AnyValue's field; None is an AnyValue with no field set. */
static int put_value(buffer *b, PyObject *value) {
    if (value == Py_None) {
        return 0;
    }
    if (PyBool_Check(value)) {
        unsigned char out[2] = {ANY_BOOL, value == Py_True};
        return put(b, out, 2);
    }
    if (PyUnicode_Check(value)) {
        return put_text(b, ANY_STRING, value);
    }
    if (PyLong_Check(value)) {
        unsigned long long number;
        if (as_u64(value, &number) < 0 || put_byte(b, ANY_INT) < 0) {
            return -1;
        }
        return put_varint(b, number);
    }
    if (PyFloat_Check(value)) {
        unsigned char out[9];
        out[0] = ANY_DOUBLE;
        if (PyFloat_Pack8(PyFloat_AsDouble(value), (char *)out + 1, 1) < 0) {
            return -1;
        }
        return put(b, out, 9);
    }
    if (PyBytes_Check(value)) {
        return put_delimited(b, ANY_BYTES, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
    }
    if (Py_EnterRecursiveCall(" while encoding a span attribute")) {
        return -1;
    }
    int failed = 0;
    if (PyList_Check(value) || PyTuple_Check(value)) {
        Py_ssize_t array = open_field(b, ANY_ARRAY);
        failed = array < 0;
        for (Py_ssize_t i = 0; !failed && i < PySequence_Fast_GET_SIZE(value); i++) {
            PyObject *item = Py_NewRef(PySequence_Fast_GET_ITEM(value, i)); /* as in put_each */
            Py_ssize_t start = open_field(b, LIST_ITEM);
            failed = start < 0 || put_value(b, item) < 0 || close_field(b, start) < 0;
            Py_DECREF(item);
        }
        failed = failed || close_field(b, array) < 0;
    } else if (PyDict_Check(value)) {
        Py_ssize_t list = open_field(b, ANY_KVLIST);
        failed = list < 0 || put_attributes(b, LIST_ITEM, value) < 0 || close_field(b, list) < 0;
    } else {
        PyErr_Format(PyExc_TypeError, "an attribute value cannot be %.100s",
                     Py_TYPE(value)->tp_name);
        failed = 1;
    }
    Py_LeaveRecursiveCall();
    return failed ? -1 : 0;
}

/* ``context``'s attribute number ``which`` (a new reference). */
static PyObject *context_part(module_state *state, PyObject *context, int which) {
    return PyObject_GetAttr(context, state->context_names[which]);
}

/* ``context``'s trace id and span id under these tags. */
static int put_ids(buffer *b, module_state *state, PyObject *context, unsigned char trace_tag,
                   unsigned char span_tag) {
    PyObject *trace_id = context_part(state, context, CONTEXT_TRACE_ID);
    PyObject *span_id = trace_id == NULL ? NULL : context_part(state, context, CONTEXT_SPAN_ID);
    int failed = span_id == NULL || put_big_endian(b, trace_tag, trace_id, 16) < 0 ||
                 put_big_endian(b, span_tag, span_id, 8) < 0;
    Py_XDECREF(trace_id);
    Py_XDECREF(span_id);
    return failed ? -1 : 0;
}

/* ``context``'s span id under ``tag``. */
static int put_span_id(buffer *b, module_state *state, PyObject *context, unsigned char tag) {
    PyObject *span_id = context_part(state, context, CONTEXT_SPAN_ID);
    int failed = span_id == NULL || put_big_endian(b, tag, span_id, 8) < 0;
    Py_XDECREF(span_id);
    return failed ? -1 : 0;
}

/* ``context``'s trace state under ``tag``, when it has any. */
static int put_trace_state(buffer *b, module_state *state, unsigned char tag, PyObject *context) {
    PyObject *trace_state = context_part(state, context, CONTEXT_TRACE_STATE);
    if (trace_state == NULL) {
        return -1;
    }
    int failed = 0;
    if (trace_state != Py_None) {
        Py_ssize_t entries = PyObject_Length(trace_state);
        failed = entries < 0;
        if (entries > 0) {
            PyObject *header = PyObject_CallMethod(trace_state, "to_header", NULL);
            failed = header == NULL || put_text(b, tag, header) < 0;
            Py_XDECREF(header);
        }
    }
    Py_DECREF(trace_state);
    return failed ? -1 : 0;
}

/* SpanFlags for a span whose parent (or a link) is ``context``: 1 if it is remote, 0 if not. */
static int is_remote(module_state *state, PyObject *context) {
    if (context == Py_None) {
        return 0;
    }
    PyObject *remote = context_part(state, context, CONTEXT_IS_REMOTE);
    if (remote == NULL) {
        return -1;
    }
    int answer = PyObject_IsTrue(remote);
    Py_DECREF(remote);
    return answer;
}

static int put_flags(buffer *b, module_state *state, PyObject *context) {
    int remote = is_remote(state, context);
    return remote < 0 ? -1 : put_fixed(b, HAS_IS_REMOTE | (remote ? IS_REMOTE : 0), 4);
}

static int check_context(module_state *state, PyObject *context, const char *what) {
    int is_context = PyObject_IsInstance(context, state->context_type);
    if (is_context != 0) {
        return is_context < 0 ? -1 : 0;
    }
    PyErr_Format(PyExc_TypeError, "%s must be a SpanContext, not %.100s", what,
                 Py_TYPE(context)->tp_name);
    return -1;
}

static int put_count(buffer *b, unsigned char tag, PyObject *count) {
    Py_ssize_t value = PyLong_AsSsize_t(count);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (value == 0) {
        return 0;
    }
    return put_byte(b, tag) < 0 ? -1 : put_varint(b, (unsigned long long)value);
}

/* Attributes ``names`` of ``owner``, as new references in ``out``. */
static int get_attrs(PyObject *owner, const char *const *names, PyObject **out, int count) {
    for (int i = 0; i < count; i++) {
        out[i] = PyObject_GetAttrString(owner, names[i]);
        if (out[i] == NULL) {
            while (i-- > 0) {
                Py_DECREF(out[i]);
            }
            return -1;
        }
    }
    return 0;
}

static void release(PyObject **objects, int count) {
    for (int i = 0; i < count; i++) {
        Py_DECREF(objects[i]);
    }
}

static const char *const event_names[] = {"timestamp", "name", "attributes", "dropped_attributes"};

static int put_event(buffer *b, module_state *state, PyObject *event) {
    PyObject *parts[4];
    if (get_attrs(event, event_names, parts, 4) < 0) {
        return -1;
    }
    unsigned long long time = 0;
    int failed = parts[0] != Py_None && as_u64(parts[0], &time) < 0;
    if (!failed && time) {
        failed = put_byte(b, EVENT_TIME) < 0 || put_fixed(b, time, 8) < 0;
    }
    if (!failed && PyObject_IsTrue(parts[1]) == 1) {
        failed = put_text(b, EVENT_NAME, parts[1]) < 0;
    }
    failed = failed || put_attributes(b, EVENT_ATTRIBUTES, parts[2]) < 0 ||
             put_count(b, EVENT_DROPPED_ATTRIBUTES, parts[3]) < 0;
    release(parts, 4);
    return failed ? -1 : 0;
}

static const char *const link_names[] = {"context", "attributes", "dropped_attributes"};

static int put_link(buffer *b, module_state *state, PyObject *link) {
    PyObject *parts[3];
    if (get_attrs(link, link_names, parts, 3) < 0) {
        return -1;
    }
    PyObject *context = parts[0];
    int failed = check_context(state, context, "a link's context") < 0 ||
                 put_ids(b, state, context, LINK_TRACE_ID, LINK_SPAN_ID) < 0 ||
                 put_trace_state(b, state, LINK_TRACE_STATE, context) < 0 ||
                 put_attributes(b, LINK_ATTRIBUTES, parts[1]) < 0 ||
                 put_count(b, LINK_DROPPED_ATTRIBUTES, parts[2]) < 0 ||
                 put_byte(b, LINK_FLAGS) < 0 || put_flags(b, state, context) < 0;
    release(parts, 3);
    return failed ? -1 : 0;
}

/* Each item of ``items`` (a sequence) as a field under ``tag``, written by ``put_item``. */
static int put_each(buffer *b, module_state *state, unsigned char tag, PyObject *items,
                    int (*put_item)(buffer *, module_state *, PyObject *)) {
    PyObject *sequence = PySequence_Fast(items, "events and links must be sequences");
    if (sequence == NULL) {
        return -1;
    }
    int failed = 0;
    for (Py_ssize_t i = 0; !failed && i < PySequence_Fast_GET_SIZE(sequence); i++) {
        /* Held: reading an item runs Python code, which could drop it from a list. */
        PyObject *item = Py_NewRef(PySequence_Fast_GET_ITEM(sequence, i));
        Py_ssize_t start = open_field(b, tag);
        failed = start < 0 || put_item(b, state, item) < 0 || close_field(b, start) < 0;
        Py_DECREF(item);
    }
    Py_DECREF(sequence);
    return failed ? -1 : 0;
}

/* A Status message: its description when it has one, its code unless unset. */
static PyObject *status_field(module_state *state, PyObject *status) {
    PyObject *code = PyObject_GetAttrString(status, "status_code");
    if (code == NULL) {
        return NULL;
    }
    long number = number_of(&state->statuses, code, "status code");
    Py_DECREF(code);
    PyObject *description = number < 0 ? NULL : PyObject_GetAttrString(status, "description");
    if (description == NULL) {
        return NULL;
    }
    buffer b;
    if (buffer_start(&b, 64) < 0) {
        Py_DECREF(description);
        return NULL;
    }
    Py_ssize_t start = open_field(&b, SPAN_STATUS);
    int failed = start < 0;
    if (!failed && description != Py_None && PyObject_IsTrue(description) == 1) {
        failed = put_text(&b, STATUS_MESSAGE, description) < 0;
    }
    Py_DECREF(description);
    if (!failed && number) {
        failed = put_byte(&b, STATUS_CODE) < 0 || put_varint(&b, (unsigned long long)number) < 0;
    }
    return buffer_finish(&b, failed || close_field(&b, start) < 0);
}

static int put_status(buffer *b, module_state *state, PyObject *status) {
    if (status == Py_None) {
        return 0;
    }
    if (status != state->status) {
        /* Held, so its address cannot come back as another status while it is cached. */
        PyObject *field = status_field(state, status);
        if (field == NULL) {
            return -1;
        }
        Py_XSETREF(state->status_field, field);
        Py_XSETREF(state->status, Py_NewRef(status));
    }
    return put(b, PyBytes_AS_STRING(state->status_field), PyBytes_GET_SIZE(state->status_field));
}

PyDoc_STRVAR(encode_span_doc,
             "encode_span(context, name, kind, parent, start, end, attributes, events, links,\n"
             "            status, dropped, /)\n--\n\n"
             "One Span message. parent is a SpanContext or None; start and end are nanoseconds\n"
             "(0: not set); attributes a mapping or None; events and links sequences of the\n"
             "SDK's Event and Link; status a Status or None; dropped the counts of attributes,\n"
             "events and links dropped.");

static PyObject *encode_span(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "encode_span takes 11 arguments");
        return NULL;
    }
    PyObject *context = args[0], *name = args[1], *kind = args[2], *parent = args[3];
    PyObject *start = args[4], *end = args[5], *attributes = args[6], *events = args[7];
    PyObject *links = args[8], *status = args[9], *dropped = args[10];
    module_state *state = PyModule_GetState(module);
    if (check_context(state, context, "context") < 0 ||
        (parent != Py_None && check_context(state, parent, "parent") < 0)) {
        return NULL;
    }
    if (!PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "a span's name must be a str");
        return NULL;
    }
    if (!PyTuple_Check(dropped) || PyTuple_GET_SIZE(dropped) != 3) {
        PyErr_SetString(PyExc_TypeError, "dropped must be (attributes, events, links)");
        return NULL;
    }
    long kind_number = number_of(&state->kinds, kind, "span kind");
    if (kind_number < 0) {
        return NULL;
    }
    unsigned long long start_ns, end_ns;
    if (as_u64(start, &start_ns) < 0 || as_u64(end, &end_ns) < 0) {
        return NULL;
    }
    buffer b;
    if (buffer_start(&b, 512) < 0) {
        return NULL;
    }
    int failed =
        put_ids(&b, state, context, SPAN_TRACE_ID, SPAN_SPAN_ID) < 0 ||
        put_trace_state(&b, state, SPAN_TRACE_STATE, context) < 0 ||
        (parent != Py_None && put_span_id(&b, state, parent, SPAN_PARENT_SPAN_ID) < 0) ||
        (PyUnicode_GET_LENGTH(name) && put_text(&b, SPAN_NAME, name) < 0) ||
        put_byte(&b, SPAN_KIND) < 0 || put_varint(&b, (unsigned long long)kind_number) < 0 ||
        (start_ns && (put_byte(&b, SPAN_START) < 0 || put_fixed(&b, start_ns, 8) < 0)) ||
        (end_ns && (put_byte(&b, SPAN_END) < 0 || put_fixed(&b, end_ns, 8) < 0)) ||
        put_attributes(&b, SPAN_ATTRIBUTES, attributes) < 0 ||
        put_count(&b, SPAN_DROPPED_ATTRIBUTES, PyTuple_GET_ITEM(dropped, 0)) < 0 ||
        put_each(&b, state, SPAN_EVENTS, events, put_event) < 0 ||
        put_count(&b, SPAN_DROPPED_EVENTS, PyTuple_GET_ITEM(dropped, 1)) < 0 ||
        put_each(&b, state, SPAN_LINKS, links, put_link) < 0 ||
        put_count(&b, SPAN_DROPPED_LINKS, PyTuple_GET_ITEM(dropped, 2)) < 0 ||
        put_status(&b, state, status) < 0 || put_byte(&b, 0x85) < 0 || put_byte(&b, 0x01) < 0 ||
        put_flags(&b, state, parent) < 0;
    return buffer_finish(&b, failed);
}

/* The arguments (tag, something) of the functions below: the tag is one byte, for a field
 * number under 16. */
static int tag_argument(const char *function, PyObject *const *args, Py_ssize_t nargs,
                        unsigned char *out) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s takes 2 arguments", function);
        return -1;
    }
    long value = PyLong_AsLong(args[0]);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (value < 0 || value > 0x7f) {
        PyErr_SetString(PyExc_ValueError, "a tag is one byte under 0x80");
        return -1;
    }
    *out = (unsigned char)value;
    return 0;
}

PyDoc_STRVAR(encode_attributes_doc,
             "encode_attributes(tag, attributes, /)\n--\n\n"
             "Each (key, value) of the mapping as a KeyValue field under tag; b'' for None.");

static PyObject *encode_attributes(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    unsigned char tag;
    buffer b;
    if (tag_argument("encode_attributes", args, nargs, &tag) < 0 || buffer_start(&b, 256) < 0) {
        return NULL;
    }
    return buffer_finish(&b, put_attributes(&b, tag, args[1]) < 0);
}

PyDoc_STRVAR(encode_fields_doc,
             "encode_fields(tag, payloads, /)\n--\n\n"
             "Each payload (bytes) as a length-delimited field under tag, one after another.");

static PyObject *encode_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    unsigned char tag;
    if (tag_argument("encode_fields", args, nargs, &tag) < 0) {
        return NULL;
    }
    PyObject *payloads = PySequence_Fast(args[1], "payloads must be a sequence of bytes");
    if (payloads == NULL) {
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(payloads), total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *payload = PySequence_Fast_GET_ITEM(payloads, i);
        if (!PyBytes_Check(payload)) {
            Py_DECREF(payloads);
            PyErr_Format(PyExc_TypeError, "a payload must be bytes, not %.100s",
                         Py_TYPE(payload)->tp_name);
            return NULL;
        }
        total += PyBytes_GET_SIZE(payload) + 11;
    }
    buffer b;
    int failed = buffer_start(&b, total + 1) < 0;
    for (Py_ssize_t i = 0; !failed && i < count; i++) {
        PyObject *payload = PySequence_Fast_GET_ITEM(payloads, i);
        failed = put_delimited(&b, tag, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload)) < 0;
    }
    Py_DECREF(payloads);
    return failed ? NULL : buffer_finish(&b, 0);
}

static PyMethodDef methods[] = {
    {"encode_span", (PyCFunction)(void (*)(void))encode_span, METH_FASTCALL, encode_span_doc},
    {"encode_attributes", (PyCFunction)(void (*)(void))encode_attributes, METH_FASTCALL,
     encode_attributes_doc},
    {"encode_fields", (PyCFunction)(void (*)(void))encode_fields, METH_FASTCALL,
     encode_fields_doc},
    {NULL, NULL, 0, NULL},
};

/* Each member of the enum ``name`` in ``module``, numbered as its value plus ``offset``. */
static int number_members(numbering *numbers, PyObject *module, const char *name, long offset) {
    PyObject *type = PyObject_GetAttrString(module, name);
    PyObject *members = type == NULL ? NULL : PySequence_List(type);
    Py_XDECREF(type);
    if (members == NULL) {
        return -1;
    }
    int failed = PyList_GET_SIZE(members) > MAX_MEMBERS;
    if (failed) {
        PyErr_Format(PyExc_ImportError, "%s has more members than ctrltrace knows", name);
    }
    for (Py_ssize_t i = 0; !failed && i < PyList_GET_SIZE(members); i++) {
        PyObject *member = PyList_GET_ITEM(members, i);
        PyObject *value = PyObject_GetAttrString(member, "value");
        long number = value == NULL ? -1 : PyLong_AsLong(value);
        Py_XDECREF(value);
        failed = number == -1 && PyErr_Occurred();
        if (!failed) {
            numbers->members[numbers->count] = Py_NewRef(member);
            numbers->numbers[numbers->count++] = (unsigned long)(number + offset);
        }
    }
    Py_DECREF(members);
    return failed ? -1 : 0;
}

static int exec_module(PyObject *module) {
    module_state *state = PyModule_GetState(module);
    PyObject *trace = PyImport_ImportModule("opentelemetry.trace");
    if (trace == NULL) {
        return -1;
    }
    int failed = number_members(&state->kinds, trace, "SpanKind", 1) < 0 ||
                 number_members(&state->statuses, trace, "StatusCode", 0) < 0;
    state->context_type = failed ? NULL : PyObject_GetAttrString(trace, "SpanContext");
    Py_DECREF(trace);
    for (int i = 0; state->context_type != NULL && i < CONTEXT_NAMES; i++) {
        state->context_names[i] = PyUnicode_InternFromString(context_names[i]);
        if (state->context_names[i] == NULL) {
            return -1;
        }
    }
    return state->context_type == NULL ? -1 : 0;
}

static void forget_members(numbering *numbers) {
    for (int i = 0; i < numbers->count; i++) {
        Py_CLEAR(numbers->members[i]);
    }
    numbers->count = 0;
}

static int traverse(PyObject *module, visitproc visit, void *arg) {
    module_state *state = PyModule_GetState(module);
    for (int i = 0; i < state->kinds.count; i++) {
        Py_VISIT(state->kinds.members[i]);
    }
    for (int i = 0; i < state->statuses.count; i++) {
        Py_VISIT(state->statuses.members[i]);
    }
    Py_VISIT(state->status);
    Py_VISIT(state->context_type);
    return 0;
}

static int clear(PyObject *module) {
    module_state *state = PyModule_GetState(module);
    forget_members(&state->kinds);
    forget_members(&state->statuses);
    Py_CLEAR(state->status);
    Py_CLEAR(state->status_field);
    Py_CLEAR(state->context_type);
    for (int i = 0; i < CONTEXT_NAMES; i++) {
        Py_CLEAR(state->context_names[i]);
    }
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ctrltrace.exporters._otlpwire",
    .m_doc = "The OTLP protobuf wire format, in C: ctrltrace.exporters.otlpwire's accelerator.",
    .m_size = sizeof(module_state),
    .m_methods = methods,
    .m_slots = slots,
    .m_traverse = traverse,
    .m_clear = clear,
};

PyMODINIT_FUNC PyInit__otlpwire(void) { return PyModuleDef_Init(&module_def); }
