/* The Segment reader's common case in C (issue 17): a `/v1/batch` body's messages made into
 * their events' bytes in one call, with no Python object per member.
 *
 * `tracking/segment_reader.py` stays the oracle. This module does only what it can do the
 * same way, byte for byte, and leaves everything else to it:
 *
 * - `scan(content)` checks the whole body as strict, compact JSON (no whitespace between
 *   tokens, valid UTF-8, valid escapes, no lone surrogates, nesting under MAX_DEPTH) and
 *   returns where each message's members are. Anything it does not accept (a body the
 *   Python reader may still take, or refuse) gives None: the caller then reads the body in
 *   Python. Being stricter than msgspec is always safe; being looser never is.
 * - `take(...)` makes each message's event: Segment's checks, the context's decision (by
 *   its bytes, from the caller's dict, or worked out by a Python callback on a miss), the
 *   ids' pseudonyms (the same), the time, `context.stellwerk` spliced in, the CloudEvent's
 *   JSON. A message it does not take as its common shape (an escape in a member it reads,
 *   no `messageId`, an e-mail address to hash, a time of another form, ...) is None in the
 *   answer, and the caller takes that message the Python way.
 *
 * Every read is bounded by the content's end; `take` checks each span of the layout it is
 * given against the content it is given, so no layout can make it read out of bounds.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Nesting of the whole body (the body's object and the batch's array included). msgspec
 * gives up near 1,000; well under it, a body this module accepts is one msgspec decodes. */
#define MAX_DEPTH 200
/* Members of one message; a message with more is left to Python. */
#define MAX_MEMBERS 64
/* `segment.MAX_ID_LENGTH`: a messageId's characters. */
#define MAX_ID_LENGTH 256

typedef const unsigned char *Ptr;

/* The small writers a message calls many times (`out_add`, `ints_push`): inline even where
 * the compiler would not, their growth kept aside. */
#if defined(__GNUC__)
#define ALWAYS_INLINE __attribute__((always_inline))
#else
#define ALWAYS_INLINE
#endif

/* ---------------------------------------------------------------------------------------
 * Strict JSON: each function takes the position of a token's first byte, returns the
 * position after it, or NULL when the input is not strict compact JSON.
 * ------------------------------------------------------------------------------------- */

static int
hex4(Ptr p, Ptr end, unsigned *out)
{
    unsigned v = 0;
    if (end - p < 4)
        return 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return 0;
    }
    *out = v;
    return 1;
}

/* A string from its opening quote. `*escaped` is set when it holds a backslash: its bytes
 * are then not its text, and a member this module reads as text is left to Python. */
/* Bytes that stand for themselves in a string: printable ASCII but the quote and backslash.
 * Filled by `module_exec`. */
static unsigned char plain[256];

/* Whether none of a word's 8 bytes is a quote, a backslash, a control character or past
 * ASCII: all `plain`. Each test is the exact "some byte is zero / below n" of a word (a byte
 * above a borrowing one may show falsely, but only when some byte does already). */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static inline int
word_plain(uint64_t w)
{
    uint64_t quote = w ^ (ONES * '"'), backslash = w ^ (ONES * '\\');
    uint64_t found = w | ((w - ONES * 0x20) & ~w) | ((quote - ONES) & ~quote)
                     | ((backslash - ONES) & ~backslash);
    return (found & HIGHS) == 0;
}

static Ptr
skip_string(Ptr p, Ptr end, int *escaped)
{
    p++; /* the opening quote */
    while (p < end) {
#if defined(__SSE2__)
        /* Sixteen bytes at a time, to the first that is not plain: a quote, a backslash, or
         * (compared as signed bytes) below 0x20, which holds the control characters and every
         * byte past ASCII. Then on from that byte, below, without a look at those before it. */
        const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'),
                      space = _mm_set1_epi8(0x20);
        while (end - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)p);
            __m128i odd = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote),
                                                    _mm_cmpeq_epi8(v, backslash)),
                                       _mm_cmplt_epi8(v, space));
            int mask = _mm_movemask_epi8(odd);
            if (mask != 0) {
                p += __builtin_ctz((unsigned)mask);
                break;
            }
            p += 16;
        }
#endif
        /* Eight bytes at a time while they are all plain (agents, URLs, ids), then by byte. */
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            if (!word_plain(w))
                break;
            p += 8;
        }
        while (p < end && plain[*p])
            p++;
        if (p >= end)
            break;
        unsigned c = *p;
        if (c == '"')
            return p + 1;
        if (c == '\\') {
            *escaped = 1;
            if (end - p < 2)
                return NULL;
            c = p[1];
            if (c == 'u') {
                unsigned unit;
                if (!hex4(p + 2, end, &unit))
                    return NULL;
                p += 6;
                if (unit >= 0xDC00 && unit <= 0xDFFF)
                    return NULL; /* a low surrogate alone */
                if (unit >= 0xD800 && unit <= 0xDBFF) {
                    unsigned low;
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, end, &low)
                        || low < 0xDC00 || low > 0xDFFF)
                        return NULL; /* a high surrogate without its low half */
                    p += 6;
                }
                continue;
            }
            if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r'
                || c == 't') {
                p += 2;
                continue;
            }
            return NULL;
        }
        if (c < 0x20)
            return NULL; /* a control character must be escaped */
        if (c < 0x80) {
            p++;
            continue;
        }
        /* UTF-8, strictly: no overlong forms, no surrogates, nothing above U+10FFFF. */
        if (c >= 0xC2 && c <= 0xDF) {
            if (end - p < 2 || (p[1] & 0xC0) != 0x80)
                return NULL;
            p += 2;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
                return NULL;
            if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F))
                return NULL;
            p += 3;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            if (end - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80
                || (p[3] & 0xC0) != 0x80)
                return NULL;
            if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F))
                return NULL;
            p += 4;
        }
        else
            return NULL;
    }
    return NULL; /* no closing quote */
}

static Ptr
skip_digits(Ptr p, Ptr end)
{
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p;
}

/* A number as JSON's grammar has it: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
 * Refused too: one that may be too large for a float (an exponent of three digits or more,
 * 200 digits or more before it), which msgspec refuses to decode; the Python reader checks
 * such a body whole. */
static Ptr
skip_number(Ptr p, Ptr end)
{
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return NULL;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9') {
        Ptr digits = p;
        p = skip_digits(p, end);
        if (p - digits >= 200)
            return NULL;
    }
    else
        return NULL;
    if (p < end && *p == '.') {
        Ptr digits = ++p;
        p = skip_digits(p, end);
        if (p == digits)
            return NULL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        Ptr digits = p;
        p = skip_digits(p, end);
        if (p == digits || p - digits >= 3)
            return NULL;
    }
    return p;
}

static Ptr
skip_literal(Ptr p, Ptr end, const char *word, Py_ssize_t size)
{
    if (end - p < size || memcmp(p, word, (size_t)size) != 0)
        return NULL;
    return p + size;
}

/* One value of any kind, nested up to `MAX_DEPTH - depth` more levels, without recursion. */
static Ptr
skip_value(Ptr p, Ptr end, int depth)
{
    char stack[MAX_DEPTH];
    int top = 0;
    int escaped = 0;
    for (;;) {
        /* a value */
        if (p >= end)
            return NULL;
        switch (*p) {
        case '{':
            if (depth + top >= MAX_DEPTH)
                return NULL;
            p++;
            if (p < end && *p == '}') {
                p++;
                break;
            }
            stack[top++] = '{';
            if (p >= end || *p != '"' || !(p = skip_string(p, end, &escaped)))
                return NULL;
            if (p >= end || *p != ':')
                return NULL;
            p++;
            continue; /* its first member's value */
        case '[':
            if (depth + top >= MAX_DEPTH)
                return NULL;
            p++;
            if (p < end && *p == ']') {
                p++;
                break;
            }
            stack[top++] = '[';
            continue; /* its first item */
        case '"':
            p = skip_string(p, end, &escaped);
            break;
        case 't':
            p = skip_literal(p, end, "true", 4);
            break;
        case 'f':
            p = skip_literal(p, end, "false", 5);
            break;
        case 'n':
            p = skip_literal(p, end, "null", 4);
            break;
        default:
            p = skip_number(p, end);
            break;
        }
        if (p == NULL)
            return NULL;
        /* after a value: the next member or item, or the container's end */
        for (;;) {
            if (top == 0)
                return p;
            if (p >= end)
                return NULL;
            char open = stack[top - 1];
            if (*p == ',') {
                p++;
                if (open == '{') {
                    if (p >= end || *p != '"' || !(p = skip_string(p, end, &escaped)))
                        return NULL;
                    if (p >= end || *p != ':')
                        return NULL;
                    p++;
                }
                break; /* to the next value */
            }
            if ((open == '{' && *p == '}') || (open == '[' && *p == ']')) {
                p++;
                top--;
                continue;
            }
            return NULL;
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * The layout `scan` returns, as int32 in a bytes object:
 *   [0] the messages' count, [1..6] the body's shared `context`, `integrations` and
 *   `sentAt` (offset, length; offset -1: none), then for each message its members' count
 *   (-1: a message left to Python) and each member's key (offset, length, without the
 *   quotes) and value (offset, length).
 * ------------------------------------------------------------------------------------- */

typedef struct {
    int32_t *items;
    Py_ssize_t size, capacity;
} Ints;

/* `data`, a buffer of `*capacity` items of `item` bytes, moved to one of at least `needed`
 * (its capacity doubled, from `first`): the new buffer, or NULL with MemoryError (`data` and
 * `*capacity` as they were). */
static void *
buffer_grown(void *data, Py_ssize_t *capacity, Py_ssize_t needed, Py_ssize_t first, size_t item)
{
    Py_ssize_t grown = *capacity ? *capacity : first;
    while (grown < needed)
        grown *= 2;
    void *moved = PyMem_Realloc(data, (size_t)grown * item);
    if (moved == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    *capacity = grown;
    return moved;
}

/* Room for `more` numbers: the list grown (doubled from 1,024). */
static int
ints_grow(Ints *ints, Py_ssize_t more)
{
    int32_t *items =
        buffer_grown(ints->items, &ints->capacity, ints->size + more, 1024, sizeof(int32_t));
    if (items == NULL)
        return -1;
    ints->items = items;
    return 0;
}

/* Inline, the growth aside (as `out_add`): a message's members push four numbers each. */
ALWAYS_INLINE static inline int
ints_push(Ints *ints, Py_ssize_t value)
{
    if (ints->size == ints->capacity && ints_grow(ints, 1) < 0)
        return -1;
    ints->items[ints->size++] = (int32_t)value;
    return 0;
}

/* A member's key and value (offset, length each), with one look at the room left. */
ALWAYS_INLINE static inline int
ints_push_member(Ints *ints, Py_ssize_t key, Py_ssize_t key_size, Py_ssize_t value,
                 Py_ssize_t value_size)
{
    if (ints->capacity - ints->size < 4 && ints_grow(ints, 4) < 0)
        return -1;
    int32_t *at = ints->items + ints->size;
    at[0] = (int32_t)key;
    at[1] = (int32_t)key_size;
    at[2] = (int32_t)value;
    at[3] = (int32_t)value_size;
    ints->size += 4;
    return 0;
}

#define HEADER 7

/* A key's bytes are a name (a string literal). */
#define KEY_IS(key, size, name)                                                              \
    ((size) == (Py_ssize_t)(sizeof(name) - 1) && memcmp((key), (name), sizeof(name) - 1) == 0)

/* A message from its `{` (at nesting `depth`): its members into `ints`, or -1 in place of
 * the count when it is left to Python (an escaped key, too many members). NULL: invalid. */
static Ptr
scan_message(Ptr p, Ptr end, Ptr base, int depth, Ints *ints)
{
    Py_ssize_t count_at = ints->size;
    int count = 0, left = 0;
    if (ints_push(ints, 0) < 0)
        return NULL;
    p++;
    if (p < end && *p == '}')
        return p + 1;
    for (;;) {
        int escaped = 0;
        if (p >= end || *p != '"')
            return NULL;
        Ptr key = p + 1;
        p = skip_string(p, end, &escaped);
        if (p == NULL || p >= end || *p != ':')
            return NULL;
        Ptr key_end = p - 1;
        p++;
        Ptr value = p;
        p = skip_value(p, end, depth + 1);
        if (p == NULL)
            return NULL;
        if (escaped || count == MAX_MEMBERS)
            left = 1;
        if (!left) {
            if (ints_push_member(ints, key - base, key_end - key, value - base, p - value) < 0)
                return NULL;
            count++;
        }
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}') {
            p++;
            break;
        }
        return NULL;
    }
    if (left) {
        ints->size = count_at + 1;
        ints->items[count_at] = -1;
    }
    else
        ints->items[count_at] = count;
    return p;
}

static PyObject *
scan(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "scan() takes bytes");
        return NULL;
    }
    Ptr base = (Ptr)PyBytes_AS_STRING(arg);
    Py_ssize_t length = PyBytes_GET_SIZE(arg);
    if (length > INT32_MAX / 2)
        Py_RETURN_NONE;
    Ptr p = base, end = base + length;
    Ints ints = {NULL, 0, 0};
    PyObject *write_key = NULL;
    int seen_batch = 0, seen_key = 0;
    for (int i = 0; i < HEADER; i++)
        if (ints_push(&ints, i == 0 ? 0 : -1) < 0)
            goto fail;
    if (p >= end || *p != '{')
        goto none;
    p++;
    if (p < end && *p == '}')
        goto none; /* no batch */
    for (;;) {
        int escaped = 0;
        if (p >= end || *p != '"')
            goto none;
        Ptr key = p + 1;
        p = skip_string(p, end, &escaped);
        if (p == NULL || p >= end || *p != ':' || escaped)
            goto none;
        Py_ssize_t key_size = p - 1 - key;
        p++;
        Ptr value = p;
        if (KEY_IS(key, key_size, "batch")) {
            if (seen_batch++ || p >= end || *p != '[')
                goto none;
            p++;
            if (p < end && *p == ']')
                p++;
            else
                for (;;) {
                    if (p >= end)
                        goto none;
                    if (*p == '{')
                        p = scan_message(p, end, base, 2, &ints);
                    else {
                        p = skip_value(p, end, 2);
                        if (p != NULL && ints_push(&ints, -1) < 0)
                            goto fail;
                    }
                    if (p == NULL) {
                        if (PyErr_Occurred())
                            goto fail;
                        goto none;
                    }
                    ints.items[0]++;
                    if (p < end && *p == ',') {
                        p++;
                        continue;
                    }
                    if (p < end && *p == ']') {
                        p++;
                        break;
                    }
                    goto none;
                }
        }
        else {
            int slot = KEY_IS(key, key_size, "context")        ? 1
                       : KEY_IS(key, key_size, "integrations") ? 3
                       : KEY_IS(key, key_size, "sentAt")       ? 5
                                                               : 0;
            int escaped_value = 0;
            p = skip_value(p, end, 1);
            if (p == NULL)
                goto none;
            if (KEY_IS(key, key_size, "writeKey")) {
                /* A string the Python reader gives as it is; anything else it decodes in
                 * full, which is its to do. */
                if (seen_key++)
                    goto none;
                if (*value == '"') {
                    skip_string(value, end, &escaped_value);
                    if (escaped_value)
                        goto none;
                    write_key = PyUnicode_DecodeUTF8((const char *)value + 1, p - value - 2,
                                                     "strict");
                    if (write_key == NULL)
                        goto fail;
                }
                else if (*value != 'n')
                    goto none;
            }
            else if (slot) {
                /* What the Python reader shares into each message: an object (context,
                 * integrations) or a string (sentAt); null is none; else its to refuse. */
                if (ints.items[slot] != -1)
                    goto none; /* given twice */
                if (*value == 'n')
                    ints.items[slot] = -2; /* seen, null */
                else if ((slot == 5) ? *value == '"' : *value == '{') {
                    ints.items[slot] = (int32_t)(value - base);
                    ints.items[slot + 1] = (int32_t)(p - value);
                }
                else
                    goto none;
            }
        }
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}') {
            p++;
            break;
        }
        goto none;
    }
    if (p != end || !seen_batch)
        goto none;
    for (int slot = 1; slot < HEADER; slot += 2)
        if (ints.items[slot] == -2)
            ints.items[slot] = -1;
    PyObject *layout = PyBytes_FromStringAndSize((const char *)ints.items,
                                                 ints.size * (Py_ssize_t)sizeof(int32_t));
    PyMem_Free(ints.items);
    if (layout == NULL) {
        Py_XDECREF(write_key);
        return NULL;
    }
    if (write_key == NULL)
        write_key = Py_NewRef(Py_None);
    return Py_BuildValue("(NN)", layout, write_key);
none:
    PyMem_Free(ints.items);
    Py_XDECREF(write_key);
    Py_RETURN_NONE;
fail:
    PyMem_Free(ints.items);
    Py_XDECREF(write_key);
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * take
 * ------------------------------------------------------------------------------------- */

/* The output buffer of one event, grown as needed. */
typedef struct {
    char *data;
    Py_ssize_t size, capacity;
} Out;

/* `out_add` past the buffer's capacity: grown (doubled from 4 KB) to hold `size` more. */
static int
out_grow(Out *out, Py_ssize_t size)
{
    char *data = buffer_grown(out->data, &out->capacity, out->size + size, 4096, 1);
    if (data == NULL)
        return -1;
    out->data = data;
    return 0;
}

/* Inline, the growth aside: an event is written in ~30 pieces, most of a few bytes. */
ALWAYS_INLINE static inline int
out_add(Out *out, const void *bytes, Py_ssize_t size)
{
    if (out->size + size > out->capacity && out_grow(out, size) < 0)
        return -1;
    memcpy(out->data + out->size, bytes, (size_t)size);
    out->size += size;
    return 0;
}

#define ADD(out, text) out_add((out), (text), (Py_ssize_t)(sizeof(text) - 1))

/* A string member's text can be written as its JSON by quoting it: ASCII or UTF-8 that
 * msgspec writes as it is (no quote, backslash or control character). */
static unsigned char verbatim[256]; /* not a quote, backslash or control character */

static int
plain_text(const char *text, Py_ssize_t size)
{
    const unsigned char *p = (const unsigned char *)text;
    for (Py_ssize_t i = 0; i < size; i++)
        if (!verbatim[p[i]])
            return 0;
    return 1;
}

/* `value` in decimal, as `%lld` writes it (snprintf's parsing of its format costs a message
 * ~800 instructions); the digits' count. `text` holds 21 bytes at least. */
static int
decimal(char *text, long long value)
{
    char digits[24];
    int count = 0, size = 0;
    unsigned long long rest = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    do {
        digits[count++] = (char)('0' + rest % 10);
        rest /= 10;
    } while (rest);
    if (value < 0)
        text[size++] = '-';
    while (count)
        text[size++] = digits[--count];
    return size;
}

static int
add_quoted(Out *out, const char *text, Py_ssize_t size)
{
    if (ADD(out, "\"") < 0 || out_add(out, text, size) < 0 || ADD(out, "\"") < 0)
        return -1;
    return 0;
}

/* Days from 1970-01-01 to a (proleptic Gregorian) date: Howard Hinnant's days_from_civil. */
static long long
days_from_civil(long long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

static int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int
two(Ptr p)
{
    return (p[0] - '0') * 10 + (p[1] - '0');
}

/* `segment_times.TIME`, exactly: the common RFC 3339 form, a year 1971-2999, a day up to
 * the 28th, at most microseconds, `Z` or an offset. 1 and Unix seconds in `*epoch` when it
 * matches, else 0 (the caller leaves the message to Python, which reads other forms). */
static int
common_time(Ptr t, Py_ssize_t size, long long *epoch)
{
    if (size < 20)
        return 0;
    for (int i = 0; i < 19; i++) {
        int want_digit = !(i == 4 || i == 7 || i == 10 || i == 13 || i == 16);
        if (want_digit ? !is_digit(t[i]) : 0)
            return 0;
    }
    if (t[4] != '-' || t[7] != '-' || t[10] != 'T' || t[13] != ':' || t[16] != ':')
        return 0;
    int year = two(t) * 100 + two(t + 2);
    int month = two(t + 5), day = two(t + 8);
    int hour = two(t + 11), minute = two(t + 14), second = two(t + 17);
    /* 19[7-9][1-9] | 19[89]0 | 2\d{3}: 1971 to 2999 */
    if (year < 1971 || year > 2999)
        return 0;
    if (month < 1 || month > 12 || day < 1 || day > 28 || hour > 23 || minute > 59
        || second > 59)
        return 0;
    Py_ssize_t i = 19;
    if (i < size && t[i] == '.') {
        Py_ssize_t digits = 0;
        i++;
        while (i < size && is_digit(t[i]) && digits < 7) {
            i++;
            digits++;
        }
        if (digits < 1 || digits > 6)
            return 0;
    }
    long long offset = 0;
    if (i < size && t[i] == 'Z')
        i++;
    else if (i < size && (t[i] == '+' || t[i] == '-')) {
        if (size - i < 6 || !is_digit(t[i + 1]) || !is_digit(t[i + 2]) || t[i + 3] != ':'
            || !is_digit(t[i + 4]) || !is_digit(t[i + 5]))
            return 0;
        int offset_hours = two(t + i + 1), offset_minutes = two(t + i + 4);
        if (offset_hours > 23 || offset_minutes > 59)
            return 0;
        offset = offset_hours * 3600LL + offset_minutes * 60LL;
        if (t[i] == '-')
            offset = -offset;
        i += 6;
    }
    else
        return 0;
    if (i != size)
        return 0;
    *epoch = days_from_civil(year, (unsigned)month, (unsigned)day) * 86400LL + hour * 3600LL
             + minute * 60LL + second - offset;
    return 1;
}

/* The members `take` reads, by their index in a message's member list (-1: absent). */
enum {
    M_TYPE,
    M_MESSAGE_ID,
    M_USER_ID,
    M_ANONYMOUS_ID,
    M_PREVIOUS_ID,
    M_GROUP_ID,
    M_EVENT,
    M_NAME,
    M_CATEGORY,
    M_TIMESTAMP,
    M_ORIGINAL_TIMESTAMP,
    M_SENT_AT,
    M_IP,
    M_GDPR_CONSENT,
    M_PROPERTIES,
    M_INTEGRATIONS,
    M_TRAITS,
    M_CONTEXT,
    M_WRITE_KEY,
    M_COUNT
};

typedef struct {
    const char *text;
    Py_ssize_t size;
} Name;

#define NAME(text) {text, sizeof(text) - 1}

static const Name MEMBER_NAMES[M_COUNT] = {
    NAME("type"),         NAME("messageId"),  NAME("userId"),       NAME("anonymousId"),
    NAME("previousId"),   NAME("groupId"),    NAME("event"),        NAME("name"),
    NAME("category"),     NAME("timestamp"),  NAME("originalTimestamp"), NAME("sentAt"),
    NAME("ip"),           NAME("gdpr_consent"), NAME("properties"), NAME("integrations"),
    NAME("traits"),       NAME("context"),    NAME("writeKey"),
};

static int
is_name(Ptr key, Py_ssize_t size, const Name *name)
{
    return size == name->size && memcmp(key, name->text, (size_t)size) == 0;
}

/* The view's `str | None` members: a string or null, else the message is left to Python. */
static const int TEXTS[] = {M_MESSAGE_ID, M_USER_ID, M_ANONYMOUS_ID, M_PREVIOUS_ID, M_GROUP_ID,
                            M_EVENT, M_NAME, M_CATEGORY, M_TIMESTAMP, M_ORIGINAL_TIMESTAMP,
                            M_SENT_AT, M_IP};

/* `segment.TYPES`, in the order of `enum Kind`. */
static const Name KINDS[] = {NAME("track"), NAME("identify"), NAME("page"),
                             NAME("screen"), NAME("group"), NAME("alias")};
enum Kind { K_TRACK, K_IDENTIFY, K_PAGE, K_SCREEN, K_GROUP, K_ALIAS };
#define KIND_COUNT 6
static PyObject *event_types[KIND_COUNT]; /* "segment.track", ... */

/* `Seen.packed`'s items (see `segment_kept.Seen`). */
enum {
    P_OUTCOME,
    P_PREFIX,
    P_AFTER,
    P_ALONE,
    P_EMAIL_PART,
    P_NO_CONSENT,
    P_BINDING_ID,
    P_GENERATION,
    P_COUNT
};

static PyObject *s_packed; /* "packed", interned */

/* `segment_kept.TAKE` and `DROP` (anything else: LEAVE, to Python). */
#define SEEN_TAKE 0
#define SEEN_DROP 1

/* What a context's `Seen` says (its `packed` tuple, held; the items borrowed from it). */
typedef struct {
    PyObject *packed;
    long outcome;
    PyObject *prefix, *after, *alone; /* bytes */
    PyObject *email_part; /* bytes: `user_data`'s `"em":[...]` of `context.traits.email`, or empty */
    int no_consent;
} Decision;

static void
decision_clear(Decision *d)
{
    Py_CLEAR(d->packed);
}

/* `seen.packed`, checked: a tuple of its shape. New reference, or NULL with an error. */
static PyObject *
packed_of(PyObject *seen)
{
    PyObject *packed = PyObject_GetAttr(seen, s_packed);
    if (packed == NULL)
        return NULL;
    if (!PyTuple_CheckExact(packed) || PyTuple_GET_SIZE(packed) != P_COUNT
        || !PyLong_CheckExact(PyTuple_GET_ITEM(packed, P_OUTCOME))
        || !PyBytes_Check(PyTuple_GET_ITEM(packed, P_PREFIX))
        || !PyBytes_Check(PyTuple_GET_ITEM(packed, P_AFTER))
        || !PyBytes_Check(PyTuple_GET_ITEM(packed, P_ALONE))
        || !PyBytes_Check(PyTuple_GET_ITEM(packed, P_EMAIL_PART))) {
        Py_DECREF(packed);
        PyErr_SetString(PyExc_TypeError, "a context's packed decision is not of its shape");
        return NULL;
    }
    return packed;
}

/* Take `packed` (a reference passed in) as the decision held. */
static int
decision_read(Decision *d, PyObject *packed)
{
    decision_clear(d);
    d->packed = packed;
    d->outcome = PyLong_AsLong(PyTuple_GET_ITEM(packed, P_OUTCOME));
    if (d->outcome == -1 && PyErr_Occurred())
        return -1;
    d->prefix = PyTuple_GET_ITEM(packed, P_PREFIX);
    d->after = PyTuple_GET_ITEM(packed, P_AFTER);
    d->alone = PyTuple_GET_ITEM(packed, P_ALONE);
    d->email_part = PyTuple_GET_ITEM(packed, P_EMAIL_PART);
    d->no_consent = PyObject_IsTrue(PyTuple_GET_ITEM(packed, P_NO_CONSENT));
    return d->no_consent < 0 ? -1 : 0;
}

/* A kept decision is still good: no visit (left or the like), or a visit of the request's
 * binding (by its id, `packed`'s holder keeps it alive) and of the enricher's generation
 * (`_Taker.take_all`'s check). */
static int
still_good(PyObject *packed, PyObject *canonical_id, PyObject *generation)
{
    PyObject *binding_id = PyTuple_GET_ITEM(packed, P_BINDING_ID);
    if (binding_id == Py_None)
        return 1;
    int same = PyObject_RichCompareBool(binding_id, canonical_id, Py_EQ);
    if (same <= 0)
        return same;
    return PyObject_RichCompareBool(PyTuple_GET_ITEM(packed, P_GENERATION), generation, Py_EQ);
}

/* A str of a member's text (a string value without escapes, quotes cut), or of a pseudonym
 * looked up (or made by `make`) in `kept`. */
static PyObject *
text_of(Ptr value, Py_ssize_t size)
{
    /* ASCII (ids nearly always) copied into a new str: the decoder's layers cost thrice. */
    Ptr text = value + 1;
    Py_ssize_t length = size - 2;
    for (Py_ssize_t i = 0; i < length; i++)
        if (text[i] >= 0x80)
            return PyUnicode_DecodeUTF8((const char *)text, length, "strict");
    PyObject *made = PyUnicode_New(length, 127);
    if (made != NULL)
        memcpy(PyUnicode_1BYTE_DATA(made), text, (size_t)length);
    return made;
}

static PyObject *
kept_or_made(PyObject *kept, PyObject *make, PyObject *key)
{
    PyObject *found = PyDict_GetItemWithError(kept, key); /* borrowed */
    if (found != NULL && PyObject_IsTrue(found) == 1)
        return Py_NewRef(found);
    if (PyErr_Occurred())
        return NULL;
    return PyObject_CallOneArg(make, key);
}

/* The arguments of `take`, in their order (see `_segment_native.pyi`). */
enum {
    A_CONTENT,
    A_LAYOUT,
    A_SEEN,
    A_CANONICAL,
    A_GENERATION,
    A_RESOLVE,
    A_PSEUDONYMS,
    A_PSEUDONYM,
    A_USER_PATH,
    A_ANONYMOUS_PATH,
    A_EXTERNALS,
    A_EXTERNAL,
    A_OWN,
    A_RECEIVED_EPOCH,
    A_KEEP_FULL_IP,
    A_SOURCE,
    A_SOURCE_TEXT,
    A_EVENT,
    A_EVENTS,
    A_MAX_SIZE,
    A_DROPPED,
    A_EMAIL_PART,
    A_COUNT
};

/* `user_data` as `segment_reader` opens it: `,"user_data":{`, then its members. */
static const char USER_DATA[] = ",\"user_data\":{";
#define USER_DATA_SIZE ((Py_ssize_t)(sizeof(USER_DATA) - 1))

/* `user_data`'s opening (`_Taker.take_all`): the e-mail address's `em` member and the user
 * id's `external_id` after it (`opened` less its own opening), or `opened` alone, or none. */
static int
add_opening(Out *out, PyObject *em, PyObject *opened)
{
    if (em != NULL) {
        if (out_add(out, USER_DATA, USER_DATA_SIZE) < 0
            || out_add(out, PyBytes_AS_STRING(em), PyBytes_GET_SIZE(em)) < 0)
            return -1;
        if (opened != NULL
            && (ADD(out, ",") < 0
                || out_add(out, PyBytes_AS_STRING(opened) + USER_DATA_SIZE,
                           PyBytes_GET_SIZE(opened) - USER_DATA_SIZE) < 0))
            return -1;
        return 0;
    }
    if (opened != NULL)
        return out_add(out, PyBytes_AS_STRING(opened), PyBytes_GET_SIZE(opened));
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * The events: `ingest.DecodedEvent`s made here, what `Ingest.take_encoded` takes, so that
 * the collector hands the C reader's list on as it is (no `Ready` a message, no loop in
 * Python making each `DecodedEvent` of it). An event is made as `object.__new__` makes it
 * and its slots are set through their member descriptors, as its `__init__` sets them
 * (`test_segment_native` holds the two alike, slot by slot): calling the class would run
 * that `__init__`'s Python for each event.
 * ------------------------------------------------------------------------------------- */

enum Slot { S_INDEX, S_ENCODED, S_ID, S_SOURCE, S_TYPE, S_SUBJECT, S_EVENT, S_COUNT };
static const char *const SLOT_NAMES[S_COUNT] = {"index", "encoded", "id", "source",
                                                "type", "subject", "_event"};

/* `type`'s slots (member descriptors of object slots that it defines itself), or -1 with a
 * TypeError for a type of another shape. */
static int
event_slots(PyObject *type, PyMemberDef **slots)
{
    if (!PyType_Check(type) || ((PyTypeObject *)type)->tp_alloc == NULL)
        goto wrong;
    for (int s = 0; s < S_COUNT; s++) {
        PyObject *found = PyDict_GetItemString(((PyTypeObject *)type)->tp_dict, SLOT_NAMES[s]);
        if (found == NULL || !Py_IS_TYPE(found, &PyMemberDescr_Type)
            || PyDescr_TYPE(found) != (PyTypeObject *)type)
            goto wrong;
        PyMemberDef *member = ((PyMemberDescrObject *)found)->d_member;
        if (member->type != T_OBJECT_EX || (member->flags & READONLY))
            goto wrong;
        slots[s] = member; /* the descriptor, and so the definition, lives with the type */
    }
    return 0;
wrong:
    PyErr_SetString(PyExc_TypeError, "take(): the events' type has not the slots of DecodedEvent");
    return -1;
}

/* How one message ended: an event, or a decision to leave it. */
enum { TAKEN, LEAVE, DROP };

typedef struct {
    PyObject *const *args;
    Ptr base;
    Py_ssize_t length;
    int user_path, anonymous_path, keep_full_ip;
    long long received_epoch;
    const int32_t *shared; /* the layout's header, [1..6] */
    Decision decision;
    Ptr last_context; /* the context of the decision held, compared by its bytes */
    Py_ssize_t last_context_size;
    int have_decision;
    Out out;
    PyTypeObject *event_type;      /* `ingest.DecodedEvent` */
    PyMemberDef *slots[S_COUNT];   /* its slots, by `enum Slot` */
    Py_ssize_t taken;              /* events made so far: the next one's `index` */
    Py_ssize_t max_size;           /* `events.MAX_EVENT_SIZE` */
} Request;

/* A new event of `r->event_type`, its slots set to `values` (by `enum Slot`). */
static PyObject *
event_made(Request *r, PyObject *const *values)
{
    PyObject *made = r->event_type->tp_alloc(r->event_type, 0);
    if (made == NULL)
        return NULL;
    for (int s = 0; s < S_COUNT; s++)
        if (PyMember_SetOne((char *)made, r->slots[s], values[s]) < 0) {
            Py_DECREF(made);
            return NULL;
        }
    return made;
}

static int
is_null(Ptr value, Py_ssize_t size)
{
    return size == 4 && memcmp(value, "null", 4) == 0;
}

/* One message (its member list from the layout) made into its event (`DecodedEvent`) in
 * `*ready`, or LEAVE or DROP; -1 with an exception set on an error of a callback or of
 * memory. An event over the size limit is left too: Python refuses it with the message's
 * own id, as before. */
static int
take_message(Request *r, const int32_t *members, int count, PyObject **ready)
{
    PyObject *const *args = r->args;
    Ptr base = r->base;
    int at[M_COUNT];
    PyObject *id = NULL, *user = NULL, *anonymous = NULL, *user_out = NULL, *anonymous_out = NULL,
             *opened = NULL, *encoded = NULL, *em = NULL, *index = NULL;
    Ptr email = NULL; /* the message's own `traits.email`, a string (its JSON) */
    Py_ssize_t email_size = 0;
    int outcome = LEAVE;

    for (int m = 0; m < M_COUNT; m++)
        at[m] = -1;
    /* The members: none twice, no name with `context.stellwerk` in it (a forged member). */
    for (int i = 0; i < count; i++) {
        Ptr name = base + members[4 * i];
        Py_ssize_t size = members[4 * i + 1];
        for (int j = 0; j < i; j++)
            if (members[4 * j + 1] == size && memcmp(base + members[4 * j], name, (size_t)size) == 0)
                return LEAVE;
        if (size >= 17) {
            for (Py_ssize_t k = 0; k + 17 <= size; k++)
                if (memcmp(name + k, "context.stellwerk", 17) == 0)
                    return LEAVE;
        }
        for (int m = 0; m < M_COUNT; m++)
            if (is_name(name, size, &MEMBER_NAMES[m])) {
                at[m] = i;
                break;
            }
    }
#define VALUE(m) (base + members[4 * at[m] + 2])
#define SIZE(m) ((Py_ssize_t)members[4 * at[m] + 3])
#define PRESENT(m) (at[m] >= 0 && !is_null(VALUE(m), SIZE(m)))
    /* The view's types: text members are strings or null; read as text, without escapes. */
    for (size_t t = 0; t < sizeof(TEXTS) / sizeof(TEXTS[0]); t++) {
        int m = TEXTS[t];
        if (!PRESENT(m))
            continue;
        if (SIZE(m) < 2 || *VALUE(m) != '"' || VALUE(m)[SIZE(m) - 1] != '"')
            return LEAVE;
        if (memchr(VALUE(m), '\\', (size_t)SIZE(m)) != NULL)
            return LEAVE;
    }
    if (PRESENT(M_PROPERTIES) && *VALUE(M_PROPERTIES) != '{')
        return LEAVE;
    if (PRESENT(M_INTEGRATIONS) && *VALUE(M_INTEGRATIONS) != '{')
        return LEAVE;
    if (PRESENT(M_GDPR_CONSENT))
        return LEAVE; /* the IAB's parameter: consent reads it; Python does */
    int own_traits = PRESENT(M_TRAITS);
    if (own_traits) {
        /* An object: its `email`, read as the view reads it (a string without escapes; any
         * other value is no address). A member named with an escape, or `email` twice, is
         * left to Python. */
        Ptr p = VALUE(M_TRAITS), end = p + SIZE(M_TRAITS);
        int emails = 0;
        if (*p != '{')
            return LEAVE;
        p++;
        while (p < end && *p == '"') {
            int esc = 0;
            Ptr name = p + 1;
            p = skip_string(p, end, &esc);
            if (p == NULL || esc)
                return LEAVE;
            int is_email = KEY_IS(name, p - 1 - name, "email");
            Ptr value = p + 1;
            p = skip_value(value, end, 0);
            if (p == NULL)
                return LEAVE;
            if (is_email) {
                if (emails++)
                    return LEAVE;
                if (*value == '"') {
                    if (memchr(value, '\\', (size_t)(p - value)) != NULL)
                        return LEAVE;
                    email = value;
                    email_size = p - value;
                }
            }
            if (p < end && *p == ',')
                p++;
        }
    }
    /* `check`: the type, the ids, what a type requires. */
    int kind = -1;
    if (at[M_TYPE] < 0 || *VALUE(M_TYPE) != '"')
        return LEAVE;
    for (int k = 0; k < KIND_COUNT; k++)
        if (is_name(VALUE(M_TYPE) + 1, SIZE(M_TYPE) - 2, &KINDS[k]))
            kind = k;
    if (kind < 0)
        return LEAVE;
    if (!PRESENT(M_MESSAGE_ID))
        return LEAVE; /* an id to make up: Python does */
    {
        Py_ssize_t characters = 0;
        Ptr text = VALUE(M_MESSAGE_ID) + 1;
        for (Py_ssize_t i = 0; i < SIZE(M_MESSAGE_ID) - 2; i++)
            characters += (text[i] & 0xC0) != 0x80;
        if (characters < 1 || characters > MAX_ID_LENGTH)
            return LEAVE;
    }
    int has_user = PRESENT(M_USER_ID), has_anonymous = PRESENT(M_ANONYMOUS_ID);
    if ((has_user && SIZE(M_USER_ID) == 2) || (has_anonymous && SIZE(M_ANONYMOUS_ID) == 2))
        return LEAVE;
    if (!has_user && !has_anonymous)
        return LEAVE;
    if (kind == K_TRACK && !(PRESENT(M_EVENT) && SIZE(M_EVENT) > 2))
        return LEAVE;
    if (kind == K_GROUP && !(PRESENT(M_GROUP_ID) && SIZE(M_GROUP_ID) > 2))
        return LEAVE;
    if (kind == K_ALIAS && !(PRESENT(M_PREVIOUS_ID) && SIZE(M_PREVIOUS_ID) > 2 && has_user))
        return LEAVE;
    if (PRESENT(M_IP) && !r->keep_full_ip)
        return LEAVE; /* a top-level address to anonymise: Python does */
    long long event_time = r->received_epoch;
    int has_time = PRESENT(M_TIMESTAMP);
    if (has_time
        && !common_time(VALUE(M_TIMESTAMP) + 1, SIZE(M_TIMESTAMP) - 2, &event_time))
        return LEAVE;

    /* The context, the message's own or the batch's: its bytes decide (`Seen`). */
    const int32_t *shared = r->shared;
    Ptr context = NULL;
    Py_ssize_t context_size = 0;
    if (PRESENT(M_CONTEXT)) {
        context = VALUE(M_CONTEXT);
        context_size = SIZE(M_CONTEXT);
    }
    else if (shared[0] >= 0) {
        context = base + shared[0];
        context_size = shared[1];
    }
    if (!(r->have_decision && context_size == r->last_context_size
          && (context_size == 0 || memcmp(context, r->last_context, (size_t)context_size) == 0))) {
        PyObject *text = PyBytes_FromStringAndSize((const char *)context, context_size);
        if (text == NULL)
            return -1;
        PyObject *seen = PyDict_GetItemWithError(args[A_SEEN], text); /* borrowed */
        PyObject *packed = NULL;
        if (seen == NULL && PyErr_Occurred()) {
            Py_DECREF(text);
            return -1;
        }
        if (seen != NULL) {
            packed = packed_of(seen);
            int good = packed == NULL ? -1 : still_good(packed, args[A_CANONICAL], args[A_GENERATION]);
            if (good < 0) {
                Py_XDECREF(packed);
                Py_DECREF(text);
                return -1;
            }
            if (!good)
                Py_CLEAR(packed);
        }
        if (packed == NULL) {
            /* A miss, or a stale entry: Python works it out and keeps it. */
            seen = PyObject_CallOneArg(args[A_RESOLVE], text);
            if (seen == NULL) {
                Py_DECREF(text);
                return -1;
            }
            packed = packed_of(seen);
            Py_DECREF(seen);
        }
        Py_DECREF(text);
        if (packed == NULL)
            return -1;
        r->have_decision = 0;
        if (decision_read(&r->decision, packed) < 0)
            return -1;
        r->have_decision = 1;
        r->last_context = context;
        r->last_context_size = context_size;
    }
    Decision *d = &r->decision;
    if (d->outcome == SEEN_DROP)
        return DROP;
    if (d->outcome != SEEN_TAKE)
        return LEAVE;
    /* `user_data`'s `em`: of the message's own `traits` when it has them, else of the
     * context's (worked out with it); empty or NULL: none. */
    if (own_traits) {
        if (email != NULL) {
            PyObject *text = text_of(email, email_size);
            if (text == NULL)
                return -1;
            em = PyObject_CallOneArg(args[A_EMAIL_PART], text);
            Py_DECREF(text);
            if (em == NULL)
                return -1;
            if (!PyBytes_Check(em))
                goto error_type;
        }
    }
    else
        em = Py_NewRef(d->email_part);
    if (em != NULL && PyBytes_GET_SIZE(em) == 0)
        Py_CLEAR(em);

    /* The ids, pseudonymised if the source says; the subject; `user_data`'s opening. */
    const char *user_text = NULL, *anonymous_text = NULL;
    Py_ssize_t user_size = 0, anonymous_size = 0;
    if (has_user) {
        if (!(user = text_of(VALUE(M_USER_ID), SIZE(M_USER_ID))))
            goto error;
        if (r->user_path) {
            if (!(user_out = kept_or_made(args[A_PSEUDONYMS], args[A_PSEUDONYM], user)))
                goto error;
        }
        else
            user_out = Py_NewRef(user);
        if (!PyUnicode_Check(user_out)
            || !(user_text = PyUnicode_AsUTF8AndSize(user_out, &user_size)))
            goto error_type;
        if (!plain_text(user_text, user_size))
            goto leave;
    }
    if (has_anonymous) {
        if (!(anonymous = text_of(VALUE(M_ANONYMOUS_ID), SIZE(M_ANONYMOUS_ID))))
            goto error;
        if (r->anonymous_path) {
            if (!(anonymous_out = kept_or_made(args[A_PSEUDONYMS], args[A_PSEUDONYM], anonymous)))
                goto error;
        }
        else
            anonymous_out = Py_NewRef(anonymous);
        if (!PyUnicode_Check(anonymous_out)
            || !(anonymous_text = PyUnicode_AsUTF8AndSize(anonymous_out, &anonymous_size)))
            goto error_type;
        if (!plain_text(anonymous_text, anonymous_size))
            goto leave;
    }
    PyObject *after = em != NULL ? d->after : d->alone;
    if (has_user) {
        if (!(opened = kept_or_made(args[A_EXTERNALS], args[A_EXTERNAL], user_out)))
            goto error;
        if (!PyBytes_Check(opened) || PyBytes_GET_SIZE(opened) < USER_DATA_SIZE
            || memcmp(PyBytes_AS_STRING(opened), USER_DATA, USER_DATA_SIZE) != 0)
            goto error_type;
        after = d->after;
    }

    /* The event, as `tracked` is encoded: the message's members in their order, the write
     * key out, the batch's shared members in place of a null or after the message's own,
     * `context` last if there is none. */
    Out *out = &r->out;
    out->size = 0;
    PyObject *source = args[A_SOURCE];
    char number[32];
    int number_size = decimal(number, event_time);
    if (ADD(out, "{\"specversion\":\"1.0\",\"id\":") < 0
        || out_add(out, VALUE(M_MESSAGE_ID), SIZE(M_MESSAGE_ID)) < 0
        || ADD(out, ",\"source\":") < 0
        || out_add(out, PyBytes_AS_STRING(source), PyBytes_GET_SIZE(source)) < 0
        || ADD(out, ",\"type\":\"segment.") < 0
        || out_add(out, KINDS[kind].text, KINDS[kind].size) < 0
        || ADD(out, "\",\"subject\":") < 0)
        goto error;
    if (has_user ? add_quoted(out, user_text, user_size) < 0
                 : add_quoted(out, anonymous_text, anonymous_size) < 0)
        goto error;
    if (has_time
        && (ADD(out, ",\"time\":") < 0
            || out_add(out, VALUE(M_TIMESTAMP), SIZE(M_TIMESTAMP)) < 0))
        goto error;
    if (ADD(out, ",\"datacontenttype\":\"application/json\",\"data\":{") < 0)
        goto error;
    int first = 1, wrote_context = 0;
    PyObject *own = args[A_OWN];
#define MEMBER_OPEN(name, size)                                                              \
    ((first ? 0 : ADD(out, ",")) < 0 || ADD(out, "\"") < 0 || out_add(out, (name), (size)) < 0 \
     || ADD(out, "\":") < 0)
#define CONTEXT_VALUE()                                                                      \
    (out_add(out, PyBytes_AS_STRING(d->prefix), PyBytes_GET_SIZE(d->prefix)) < 0             \
     || out_add(out, PyBytes_AS_STRING(own), PyBytes_GET_SIZE(own)) < 0                       \
     || out_add(out, number, number_size) < 0 || add_opening(out, em, opened) < 0            \
     || out_add(out, PyBytes_AS_STRING(after), PyBytes_GET_SIZE(after)) < 0)
    for (int i = 0; i < count; i++) {
        if (i == at[M_WRITE_KEY])
            continue;
        Ptr name = base + members[4 * i];
        Py_ssize_t name_size = members[4 * i + 1];
        Ptr value = base + members[4 * i + 2];
        Py_ssize_t value_size = members[4 * i + 3];
        if (MEMBER_OPEN(name, name_size))
            goto error;
        first = 0;
        int failed;
        if (i == at[M_CONTEXT]) {
            failed = CONTEXT_VALUE();
            wrote_context = 1;
        }
        else if (i == at[M_USER_ID] && has_user)
            failed = add_quoted(out, user_text, user_size);
        else if (i == at[M_ANONYMOUS_ID] && has_anonymous)
            failed = add_quoted(out, anonymous_text, anonymous_size);
        else if (i == at[M_INTEGRATIONS] && !PRESENT(M_INTEGRATIONS) && shared[2] >= 0)
            failed = out_add(out, base + shared[2], shared[3]);
        else if (i == at[M_SENT_AT] && !PRESENT(M_SENT_AT) && shared[4] >= 0)
            failed = out_add(out, base + shared[4], shared[5]);
        else
            failed = out_add(out, value, value_size);
        if (failed)
            goto error;
    }
    if (at[M_CONTEXT] < 0 && shared[0] >= 0) {
        if (MEMBER_OPEN("context", 7) || CONTEXT_VALUE())
            goto error;
        first = 0;
        wrote_context = 1;
    }
    if (at[M_INTEGRATIONS] < 0 && shared[2] >= 0) {
        if (MEMBER_OPEN("integrations", 12) || out_add(out, base + shared[2], shared[3]) < 0)
            goto error;
        first = 0;
    }
    if (at[M_SENT_AT] < 0 && shared[4] >= 0) {
        if (MEMBER_OPEN("sentAt", 6) || out_add(out, base + shared[4], shared[5]) < 0)
            goto error;
        first = 0;
    }
    if (!wrote_context) {
        if (MEMBER_OPEN("context", 7) || CONTEXT_VALUE())
            goto error;
        first = 0;
    }
    if (ADD(out, "}}") < 0)
        goto error;
#undef MEMBER_OPEN
#undef CONTEXT_VALUE

    if (out->size > r->max_size)
        goto leave;
    if (!(encoded = PyBytes_FromStringAndSize(out->data, out->size)))
        goto error;
    if (!(id = text_of(VALUE(M_MESSAGE_ID), SIZE(M_MESSAGE_ID))))
        goto error;
    if (!(index = PyLong_FromSsize_t(r->taken)))
        goto error;
    {
        PyObject *values[S_COUNT] = {index, encoded, id, args[A_SOURCE_TEXT], event_types[kind],
                                     has_user ? user_out : anonymous_out, Py_None};
        *ready = event_made(r, values);
    }
    if (*ready == NULL)
        goto error;
    r->taken++;
    outcome = TAKEN;
    goto done;
error_type:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "a pseudonym must be a str, an opening bytes");
error:
    outcome = -1;
    goto done;
leave:
    outcome = LEAVE;
done:
    Py_XDECREF(id);
    Py_XDECREF(user);
    Py_XDECREF(anonymous);
    Py_XDECREF(user_out);
    Py_XDECREF(anonymous_out);
    Py_XDECREF(opened);
    Py_XDECREF(encoded);
    Py_XDECREF(em);
    Py_XDECREF(index);
    return outcome;
#undef VALUE
#undef SIZE
#undef PRESENT
}

static PyObject *
take(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != A_COUNT) {
        PyErr_Format(PyExc_TypeError, "take() takes %d arguments", A_COUNT);
        return NULL;
    }
    if (!PyBytes_Check(args[A_CONTENT]) || !PyBytes_Check(args[A_LAYOUT])
        || !PyDict_Check(args[A_SEEN]) || !PyDict_Check(args[A_PSEUDONYMS])
        || !PyDict_Check(args[A_EXTERNALS]) || !PyBytes_Check(args[A_OWN])
        || !PyBytes_Check(args[A_SOURCE]) || !PyUnicode_Check(args[A_SOURCE_TEXT])
        || !PyType_Check(args[A_EVENTS])
        || !PyType_IsSubtype((PyTypeObject *)args[A_EVENTS], &PyList_Type)) {
        PyErr_SetString(PyExc_TypeError, "take(): an argument is of the wrong type");
        return NULL;
    }
    Request r;
    memset(&r, 0, sizeof r);
    r.args = args;
    r.base = (Ptr)PyBytes_AS_STRING(args[A_CONTENT]);
    r.length = PyBytes_GET_SIZE(args[A_CONTENT]);
    r.user_path = PyObject_IsTrue(args[A_USER_PATH]);
    r.anonymous_path = PyObject_IsTrue(args[A_ANONYMOUS_PATH]);
    r.keep_full_ip = PyObject_IsTrue(args[A_KEEP_FULL_IP]);
    r.received_epoch = PyLong_AsLongLong(args[A_RECEIVED_EPOCH]);
    r.max_size = PyLong_AsSsize_t(args[A_MAX_SIZE]);
    if (r.user_path < 0 || r.anonymous_path < 0 || r.keep_full_ip < 0 || PyErr_Occurred())
        return NULL;
    if (event_slots(args[A_EVENT], r.slots) < 0)
        return NULL;
    r.event_type = (PyTypeObject *)args[A_EVENT];

    /* The layout, checked against the content: every span within it. */
    const int32_t *ints = (const int32_t *)PyBytes_AS_STRING(args[A_LAYOUT]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[A_LAYOUT]) / (Py_ssize_t)sizeof(int32_t);
    if (size < HEADER || ints[0] < 0 || ints[0] > size - HEADER)
        goto bad_layout; /* a message takes one number at least */
    for (int slot = 1; slot < HEADER; slot += 2)
        if (ints[slot] != -1
            && (ints[slot] < 0 || ints[slot + 1] < 0 || ints[slot] + (Py_ssize_t)ints[slot + 1] > r.length))
            goto bad_layout;
    r.shared = ints + 1;
    Py_ssize_t messages = ints[0];
    /* Appended to, not made with empty slots filled later: the callbacks run Python meanwhile,
     * and a list with empty slots must never be seen by it (`gc.get_objects`). Of the list
     * type `events` (`collector.Events`) while every message is taken: so the caller knows
     * without a look at each item that all are events, numbered by their places. */
    PyObject *taken = PyObject_CallNoArgs(args[A_EVENTS]);
    if (taken == NULL)
        return NULL;
    if (!PyList_Check(taken)) {
        Py_DECREF(taken);
        PyErr_SetString(PyExc_TypeError, "take(): the events' list is not a list");
        return NULL;
    }
    Py_ssize_t at = HEADER;
    for (Py_ssize_t index = 0; index < messages; index++) {
        if (at >= size) {
            Py_DECREF(taken);
            goto bad_layout;
        }
        int count = ints[at++];
        PyObject *item = NULL;
        int outcome = LEAVE;
        if (count >= 0) {
            if (count > MAX_MEMBERS || at + 4 * (Py_ssize_t)count > size) {
                Py_DECREF(taken);
                goto bad_layout;
            }
            for (int i = 0; i < 4 * count; i += 2)
                if (ints[at + i] < 0 || ints[at + i + 1] < 0
                    || ints[at + i] + (Py_ssize_t)ints[at + i + 1] > r.length
                    || (i % 4 == 2 && ints[at + i + 1] < 1)) {
                    Py_DECREF(taken);
                    goto bad_layout;
                }
            outcome = take_message(&r, ints + at, count, &item);
            at += 4 * (Py_ssize_t)count;
        }
        if (outcome < 0) {
            Py_DECREF(taken);
            decision_clear(&r.decision);
            PyMem_Free(r.out.data);
            return NULL;
        }
        if (outcome == DROP)
            item = Py_NewRef(args[A_DROPPED]);
        else if (outcome == LEAVE)
            item = Py_NewRef(Py_None);
        int failed = PyList_Append(taken, item);
        Py_DECREF(item);
        if (failed) {
            Py_DECREF(taken);
            decision_clear(&r.decision);
            PyMem_Free(r.out.data);
            return NULL;
        }
    }
    decision_clear(&r.decision);
    PyMem_Free(r.out.data);
    if (r.taken < messages) {
        /* Some left or dropped: a plain list, which the caller looks through. */
        PyObject *plain = PySequence_List(taken);
        Py_DECREF(taken);
        return plain;
    }
    return taken;
bad_layout:
    decision_clear(&r.decision);
    PyMem_Free(r.out.data);
    PyErr_SetString(PyExc_ValueError, "take(): the layout does not fit the content");
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)scan, METH_O,
     "scan(content) -> (layout, write_key) | None: a batch body's messages' members."},
    {"take", (PyCFunction)(void (*)(void))take, METH_FASTCALL,
     "take(...) -> list: each message's event, the dropped marker, or None (Python's)."},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *module)
{
    (void)module;
    for (int c = 0x20; c < 0x80; c++)
        plain[c] = c != '"' && c != '\\';
    for (int c = 0x20; c < 0x100; c++)
        verbatim[c] = c != '"' && c != '\\';
    for (int k = 0; k < KIND_COUNT; k++) {
        if (event_types[k] == NULL) {
            event_types[k] = PyUnicode_FromFormat("segment.%s", KINDS[k].text);
            if (event_types[k] == NULL)
                return -1;
            PyUnicode_InternInPlace(&event_types[k]);
        }
    }
    if (s_packed == NULL && !(s_packed = PyUnicode_InternFromString("packed")))
        return -1;
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef definition = {
    PyModuleDef_HEAD_INIT, "_segment_native",
    "The Segment reader's common case in C (see tracking/segment_reader.py).",
    0, methods, slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__segment_native(void)
{
    return PyModuleDef_Init(&definition);
}
