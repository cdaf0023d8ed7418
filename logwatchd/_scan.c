/* The common case of the record path in C: JSON Lines in, Arrow buffers out.
 *
 * scan_lines() walks a block of JSON Lines and takes every line it can prove valid and
 * ordinary: one JSON object (RFC 8259, UTF-8) with a non-empty string `action`, a `user_id`
 * that is a non-empty string or an integer, and a `timestamp` that is a string or an
 * integer epoch within the range the caller gives. For such a line it writes the row's
 * columns, `attributes` being the other members as compact JSON, byte for byte what
 * orjson.dumps writes for them. Every other line is handed back by number to the Python
 * path, which decides it exactly: an invalid line, a float timestamp, a key seen twice, a
 * `\u` escape, an integer of 19 digits or more, a float whose shortest form may differ
 * from its text, nesting deeper than MAX_DEPTH. "Not proven" is never "invalid" here: the
 * Python path gives every verdict and every reason.
 *
 * Each column is one growable buffer; no Python object is made per line. The input is
 * only read, within [data, data + len); every write is bounds-checked by buf_reserve.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 64       /* deeper values go to the Python path */
#define MAX_KEYS 64        /* members per object checked for duplicates; more go to Python */
#define MAX_INT_DIGITS 18  /* fits int64, and orjson reads it as an integer */
#define MAX_FLOAT_DIGITS 15  /* DBL_DIG: such a decimal is its double's shortest form */

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (extra < 0 || b->len > PY_SSIZE_T_MAX - extra) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t need = b->len + extra;
    if (need <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < need) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    char *p = PyMem_Realloc(b->data, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const void *src, Py_ssize_t n) {
    if (n == 0)
        return 0; /* memcpy may not be given the NULL of an empty buffer */
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, src, (size_t)n);
    b->len += n;
    return 0;
}

static int buf_byte(Buf *b, char c) { return buf_put(b, &c, 1); }

static int buf_i64(Buf *b, int64_t v) { return buf_put(b, &v, sizeof v); }

static int buf_i32(Buf *b, int32_t v) { return buf_put(b, &v, sizeof v); }

static void buf_free(Buf *b) {
    PyMem_Free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* The result of parsing one value: OK, NOT_PROVEN (the Python path decides), or ERROR
 * (out of memory: a Python exception is set). */
enum { OK = 0, NOT_PROVEN = 1, ERROR = -1 };

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
    Buf *out; /* where the value's compact text goes; NULL: nowhere */
    Buf *dec; /* where the escaped strings of the three fields are decoded */
} Parser;

/* What a value was, for the three fields whose values become columns. */
enum { V_OTHER, V_STRING, V_INT };

typedef struct {
    int kind;
    const unsigned char *start; /* the string's content (without quotes), or the integer's text */
    Py_ssize_t len;
    int64_t integer;
    int escaped;   /* the string holds an escape */
    int rewritten; /* ... one that orjson writes differently (\u, \/) */
    int decoded;   /* its content is in the decoding buffer at `offset`, not at `start` */
    Py_ssize_t offset;
} Value;

static inline void skip_ws(Parser *ps) {
    const unsigned char *p = ps->p, *end = ps->end;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    ps->p = p;
}

static int emit(Parser *ps, const void *src, Py_ssize_t n) {
    if (ps->out == NULL)
        return OK;
    return buf_put(ps->out, src, n) < 0 ? ERROR : OK;
}

/* One UTF-8 sequence starting at p (its first byte >= 0x80): its length, or 0 if invalid
 * (overlong forms, surrogates and code points beyond U+10FFFF are invalid). */
static inline int utf8_length(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    Py_ssize_t left = end - p;
    if (c >= 0xC2 && c <= 0xDF) {
        if (left >= 2 && (p[1] & 0xC0) == 0x80)
            return 2;
        return 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && p[1] < 0xA0)
            return 0; /* overlong */
        if (c == 0xED && p[1] > 0x9F)
            return 0; /* a surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90)
            return 0; /* overlong */
        if (c == 0xF4 && p[1] > 0x8F)
            return 0; /* beyond U+10FFFF */
        return 4;
    }
    return 0;
}

static int hex4(const unsigned char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Code point `cp` as orjson writes it in a string (to `canon`: \" \\ \b \t \n \f \r, other
 * control characters as \u00xx, everything else as UTF-8) and as UTF-8 (to `dec`). */
static int put_codepoint(Buf *canon, Buf *dec, uint32_t cp) {
    unsigned char u[4];
    Py_ssize_t n;
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (unsigned char)(0xC0 | (cp >> 6));
        u[1] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (unsigned char)(0xE0 | (cp >> 12));
        u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (unsigned char)(0xF0 | (cp >> 18));
        u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    if (dec != NULL && buf_put(dec, u, n) < 0)
        return ERROR;
    if (canon == NULL)
        return OK;
    if (cp >= 0x20 && cp != '"' && cp != '\\')
        return buf_put(canon, u, n) < 0 ? ERROR : OK;
    char esc[6] = {'\\', 0, 0, 0, 0, 0};
    Py_ssize_t m = 2;
    switch (cp) {
    case '"': esc[1] = '"'; break;
    case '\\': esc[1] = '\\'; break;
    case '\b': esc[1] = 'b'; break;
    case '\t': esc[1] = 't'; break;
    case '\n': esc[1] = 'n'; break;
    case '\f': esc[1] = 'f'; break;
    case '\r': esc[1] = 'r'; break;
    default: {
        static const char digits[] = "0123456789abcdef";
        esc[1] = 'u';
        esc[2] = '0';
        esc[3] = '0';
        esc[4] = digits[cp >> 4];
        esc[5] = digits[cp & 0xF];
        m = 6;
    }
    }
    return buf_put(canon, esc, m) < 0 ? ERROR : OK;
}

/* The content [p, end) of a string whose escapes are well-formed: written as orjson writes
 * it (to `canon`, without quotes) and decoded as UTF-8 (to `dec`); either may be NULL.
 * A lone surrogate is not proven (orjson refuses it). */
static int rewrite_string(const unsigned char *p, const unsigned char *end, Buf *canon, Buf *dec) {
    while (p < end) {
        const unsigned char *run = p;
        while (p < end && *p != '\\')
            p++;
        if (p > run) {
            if (canon != NULL && buf_put(canon, run, p - run) < 0)
                return ERROR;
            if (dec != NULL && buf_put(dec, run, p - run) < 0)
                return ERROR;
        }
        if (p >= end)
            break;
        uint32_t cp;
        unsigned char e = p[1];
        p += 2;
        switch (e) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        default: /* 'u', checked by parse_string */
            hex4(p, &cp);
            p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return NOT_PROVEN;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t low;
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &low) < 0 ||
                    low < 0xDC00 || low > 0xDFFF)
                    return NOT_PROVEN;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                p += 6;
            }
        }
        int r = put_codepoint(canon, dec, cp);
        if (r != OK)
            return r;
    }
    return OK;
}

/* A string at ps->p (which is '"'), written to ps->out as orjson would write it. Its
 * content goes to v: where it is in the input when it holds no escape, else decoded into
 * `dec` (v->decoded, at v->start_offset). */
static int parse_string(Parser *ps, Value *v, Buf *dec) {
    const unsigned char *start = ps->p + 1, *p = start, *end = ps->end;
    int escaped = 0, rewrite = 0;
    for (;;) {
        if (p >= end)
            return NOT_PROVEN;
        unsigned char c = *p;
        if (c == '"')
            break;
        if (c == '\\') {
            if (p + 1 >= end)
                return NOT_PROVEN;
            unsigned char e = p[1];
            escaped = 1;
            if (e == 'u') {
                uint32_t cp;
                if (end - p < 6 || hex4(p + 2, &cp) < 0)
                    return NOT_PROVEN;
                rewrite = 1;
                p += 6;
            } else if (e == '/') {
                rewrite = 1;
                p += 2;
            } else if (e == '"' || e == '\\' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
                       e == 't') {
                p += 2;
            } else {
                return NOT_PROVEN;
            }
        } else if (c < 0x20) {
            return NOT_PROVEN; /* a raw control character: not JSON */
        } else if (c < 0x80) {
            p++;
        } else {
            int n = utf8_length(p, end);
            if (n == 0)
                return NOT_PROVEN;
            p += n;
        }
    }
    if (v != NULL) {
        v->kind = V_STRING;
        v->escaped = escaped;
        v->rewritten = rewrite;
        v->start = start;
        v->len = p - start;
    }
    if (!rewrite) {
        if (emit(ps, start - 1, (p - start) + 2) != OK)
            return ERROR;
    }
    if (escaped && (rewrite || (v != NULL && dec != NULL))) {
        Buf *canon = rewrite ? ps->out : NULL;
        Py_ssize_t at = dec != NULL && v != NULL ? dec->len : 0;
        if (canon != NULL && buf_byte(canon, '"') < 0)
            return ERROR;
        int r = rewrite_string(start, p, canon, v != NULL ? dec : NULL);
        if (r != OK)
            return r;
        if (canon != NULL && buf_byte(canon, '"') < 0)
            return ERROR;
        if (v != NULL && dec != NULL) {
            v->decoded = 1;
            v->offset = at;
            v->len = dec->len - at;
        }
    }
    ps->p = p + 1;
    return OK;
}

/* A number: integers of up to MAX_INT_DIGITS digits (not -0), and decimals without an
 * exponent that are their double's shortest form as orjson writes it ("1.0", "0.25",
 * "-12.5"; at most MAX_FLOAT_DIGITS digits, no trailing zero but ".0", at least 1e-5). */
static int parse_number(Parser *ps, Value *v) {
    const unsigned char *start = ps->p, *p = start, *end = ps->end;
    int negative = 0;
    if (p < end && *p == '-') {
        negative = 1;
        p++;
    }
    const unsigned char *int_start = p;
    if (p >= end || *p < '0' || *p > '9')
        return NOT_PROVEN;
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9')
            return NOT_PROVEN; /* a leading zero: not JSON */
    } else {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    Py_ssize_t int_digits = p - int_start;
    if (p < end && (*p == 'e' || *p == 'E'))
        return NOT_PROVEN;
    if (p < end && *p == '.') {
        const unsigned char *frac = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        Py_ssize_t frac_digits = p - frac;
        if (frac_digits == 0 || (p < end && (*p == 'e' || *p == 'E')))
            return NOT_PROVEN;
        int zero_int = int_digits == 1 && *int_start == '0';
        if (frac_digits == 1 && frac[0] == '0') {
            if (int_digits > MAX_FLOAT_DIGITS)
                return NOT_PROVEN; /* "N.0": the integer part must be its own shortest form */
        } else {
            if (frac[frac_digits - 1] == '0')
                return NOT_PROVEN; /* a trailing zero: orjson drops it */
            if ((zero_int ? 0 : int_digits) + frac_digits > MAX_FLOAT_DIGITS)
                return NOT_PROVEN;
            if (zero_int) {
                Py_ssize_t zeros = 0;
                while (zeros < frac_digits && frac[zeros] == '0')
                    zeros++;
                if (zeros > 4)
                    return NOT_PROVEN; /* below 1e-5: orjson writes an exponent */
            }
        }
        if (v != NULL)
            v->kind = V_OTHER;
    } else {
        if (int_digits > MAX_INT_DIGITS)
            return NOT_PROVEN;
        if (negative && int_digits == 1 && *int_start == '0')
            return NOT_PROVEN; /* -0: orjson writes 0 */
        if (v != NULL) {
            int64_t value = 0;
            for (const unsigned char *q = int_start; q < p; q++)
                value = value * 10 + (*q - '0');
            v->kind = V_INT;
            v->integer = negative ? -value : value;
            v->start = start;
            v->len = p - start;
        }
    }
    if (emit(ps, start, p - start) != OK)
        return ERROR;
    ps->p = p;
    return OK;
}

static int parse_value(Parser *ps, Value *v, int depth);

/* Whether the key [k, k + n) (its text between the quotes) is among the first `count`. */
static int seen_key(const unsigned char **keys, const Py_ssize_t *lens, int count,
                    const unsigned char *k, Py_ssize_t n) {
    for (int i = 0; i < count; i++)
        if (lens[i] == n && memcmp(keys[i], k, (size_t)n) == 0)
            return 1;
    return 0;
}

/* A nested object or array, written compactly. Keys are compared as written: with only the
 * escapes parse_string proves, two keys are equal exactly when their texts are. */
static int parse_container(Parser *ps, int depth) {
    if (depth > MAX_DEPTH)
        return NOT_PROVEN;
    int object = *ps->p == '{';
    char close = object ? '}' : ']';
    const unsigned char *keys[MAX_KEYS];
    Py_ssize_t lens[MAX_KEYS];
    int count = 0;
    int r;
    if ((r = emit(ps, ps->p, 1)) != OK)
        return r;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == (unsigned char)close) {
        ps->p++;
        return emit(ps, &close, 1);
    }
    for (;;) {
        if (object) {
            if (ps->p >= ps->end || *ps->p != '"' || count == MAX_KEYS)
                return NOT_PROVEN;
            Value key;
            if ((r = parse_string(ps, &key, NULL)) != OK)
                return r;
            if (key.rewritten)
                return NOT_PROVEN; /* compared as written below */
            if (seen_key(keys, lens, count, key.start, key.len))
                return NOT_PROVEN; /* the last one wins in the Python path */
            keys[count] = key.start;
            lens[count] = key.len;
            count++;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return NOT_PROVEN;
            if ((r = emit(ps, ":", 1)) != OK)
                return r;
            ps->p++;
            skip_ws(ps);
        }
        if ((r = parse_value(ps, NULL, depth + 1)) != OK)
            return r;
        skip_ws(ps);
        if (ps->p >= ps->end)
            return NOT_PROVEN;
        if (*ps->p == ',') {
            if ((r = emit(ps, ",", 1)) != OK)
                return r;
            ps->p++;
            skip_ws(ps);
            continue;
        }
        if (*ps->p == (unsigned char)close) {
            ps->p++;
            return emit(ps, &close, 1);
        }
        return NOT_PROVEN;
    }
}

static int literal(Parser *ps, const char *word, Py_ssize_t n) {
    if (ps->end - ps->p < n || memcmp(ps->p, word, (size_t)n) != 0)
        return NOT_PROVEN;
    int r = emit(ps, word, n);
    ps->p += n;
    return r;
}

static int parse_value(Parser *ps, Value *v, int depth) {
    if (v != NULL)
        v->kind = V_OTHER;
    if (ps->p >= ps->end)
        return NOT_PROVEN;
    switch (*ps->p) {
    case '"':
        return parse_string(ps, v, ps->dec);
    case '{':
    case '[':
        return parse_container(ps, depth);
    case 't':
        return literal(ps, "true", 4);
    case 'f':
        return literal(ps, "false", 5);
    case 'n':
        return literal(ps, "null", 4);
    default:
        return parse_number(ps, v);
    }
}

typedef struct {
    Buf ts, ts_valid, str_offsets, str_data, str_spans;
    Buf uid_offsets, uid_data, act_offsets, act_data;
    Buf attr_offsets, attr_data, attr_valid;
    Buf lines, slow;
    Buf scratch; /* the decoded strings of the three fields of the line at hand */
    Py_ssize_t rows, attr_nulls, ts_nulls, blank;
    int64_t min_epoch, max_epoch, ms_threshold, min_us, max_us;
    int naive_utc;
} Out;

static int two_digits(const unsigned char *p, int *out) {
    if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9')
        return -1;
    *out = (p[0] - '0') * 10 + (p[1] - '0');
    return 0;
}

/* Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's method). */
static int64_t days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    int era = (y >= 0 ? y : y - 399) / 400;
    int yoe = y - era * 400;
    int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (int64_t)era * 146097 + doe - 719468;
}

/* A timestamp string of the one shape whose instant is certain, as records.py's _ISO_ZONED
 * (and _ISO_NAIVE when naive times are read in UTC) accept it:
 * YYYY-MM-DD[T ]HH:MM:SS[.f{1,6}][Z|+HH:MM|-HH:MM], a real calendar date, year >= 1.
 * Sets its epoch microseconds and returns 1; 0 leaves the string to the Python path. */
static int iso_us(const unsigned char *s, Py_ssize_t n, int naive_utc, int64_t *out) {
    int yh, yl, mo, d, h, mi, se;
    if (n < 19 || two_digits(s, &yh) || two_digits(s + 2, &yl) || s[4] != '-' ||
        two_digits(s + 5, &mo) || s[7] != '-' || two_digits(s + 8, &d) ||
        (s[10] != 'T' && s[10] != ' ') || two_digits(s + 11, &h) || s[13] != ':' ||
        two_digits(s + 14, &mi) || s[16] != ':' || two_digits(s + 17, &se))
        return 0;
    int y = yh * 100 + yl;
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 59)
        return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > month_days[mo - 1] + (mo == 2 && leap))
        return 0;
    Py_ssize_t i = 19;
    int64_t frac = 0;
    if (i < n && s[i] == '.') {
        int k = 0;
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, k++) {
            if (k == 6)
                return 0; /* more than microseconds */
            frac = frac * 10 + (s[i] - '0');
        }
        if (k == 0)
            return 0;
        for (; k < 6; k++)
            frac *= 10;
    }
    int64_t offset = 0;
    if (i == n) {
        if (!naive_utc)
            return 0; /* a local time in another zone */
    } else if (s[i] == 'Z' && i + 1 == n) {
        offset = 0;
    } else if ((s[i] == '+' || s[i] == '-') && i + 6 == n) {
        int oh, om;
        if (two_digits(s + i + 1, &oh) || s[i + 3] != ':' || two_digits(s + i + 4, &om) ||
            oh > 23 || om > 59)
            return 0;
        offset = (int64_t)(oh * 60 + om) * 60;
        if (s[i] == '-')
            offset = -offset;
    } else {
        return 0;
    }
    int64_t seconds = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset;
    *out = seconds * 1000000 + frac;
    return 1;
}

/* A string value's content: in the input, or decoded in the scratch buffer. */
static const unsigned char *content(Out *o, const Value *v) {
    return v->decoded ? (const unsigned char *)o->scratch.data + v->offset : v->start;
}

static int key_is(const Value *k, const char *word, Py_ssize_t n) {
    return k->len == n && memcmp(k->start, word, (size_t)n) == 0;
}

static int put_string_column(Buf *offsets, Buf *data, const unsigned char *s, Py_ssize_t n) {
    if (buf_put(data, s, n) < 0)
        return -1;
    if (data->len > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a block's column is over 2 GiB");
        return -1;
    }
    return buf_i32(offsets, (int32_t)data->len);
}

/* One line [p, end): OK (a row was written), NOT_PROVEN (nothing was written), ERROR. */
static int scan_line(Out *o, const unsigned char *p, const unsigned char *end,
                     const unsigned char *base, int64_t line_no) {
    Buf *attrs = &o->attr_data;
    Py_ssize_t attr_start = attrs->len;
    Parser ps = {p, end, attrs, &o->scratch};
    o->scratch.len = 0;
    Value ts = {0}, uid = {0}, act = {0};
    int have_ts = 0, have_uid = 0, have_act = 0, members = 0;
    const unsigned char *keys[MAX_KEYS];
    Py_ssize_t lens[MAX_KEYS];
    int count = 0;
    int r = NOT_PROVEN;

    skip_ws(&ps);
    if (ps.p >= ps.end || *ps.p != '{')
        goto not_proven;
    ps.p++;
    skip_ws(&ps);
    if (ps.p < ps.end && *ps.p == '}') {
        ps.p++;
    } else {
        for (;;) {
            if (ps.p >= ps.end || *ps.p != '"' || count == MAX_KEYS)
                goto not_proven;
            Value key;
            ps.out = NULL;
            if ((r = parse_string(&ps, &key, NULL)) != OK)
                goto fail;
            if (key.rewritten || seen_key(keys, lens, count, key.start, key.len)) {
                r = NOT_PROVEN;
                goto fail;
            }
            keys[count] = key.start;
            lens[count] = key.len;
            count++;
            skip_ws(&ps);
            if (ps.p >= ps.end || *ps.p != ':')
                goto not_proven;
            ps.p++;
            skip_ws(&ps);
            Value *field = NULL;
            if (key_is(&key, "timestamp", 9)) {
                field = &ts;
                have_ts = 1;
            } else if (key_is(&key, "user_id", 7)) {
                field = &uid;
                have_uid = 1;
            } else if (key_is(&key, "action", 6)) {
                field = &act;
                have_act = 1;
            }
            if (field != NULL) {
                ps.out = NULL;
                if ((r = parse_value(&ps, field, 1)) != OK)
                    goto fail;
            } else {
                ps.out = attrs;
                if (buf_byte(attrs, members ? ',' : '{') < 0 ||
                    buf_put(attrs, key.start - 1, key.len + 2) < 0 || buf_byte(attrs, ':') < 0) {
                    r = ERROR;
                    goto fail;
                }
                if ((r = parse_value(&ps, NULL, 1)) != OK)
                    goto fail;
                members++;
            }
            skip_ws(&ps);
            if (ps.p >= ps.end)
                goto not_proven;
            if (*ps.p == ',') {
                ps.p++;
                skip_ws(&ps);
                continue;
            }
            if (*ps.p == '}') {
                ps.p++;
                break;
            }
            goto not_proven;
        }
    }
    skip_ws(&ps);
    if (ps.p != ps.end)
        goto not_proven; /* something after the object */
    /* The three fields, as the Python path's single test for a valid record. */
    if (!have_ts || !have_uid || !have_act)
        goto not_proven;
    if (act.kind != V_STRING || act.len == 0)
        goto not_proven;
    if (!((uid.kind == V_STRING && uid.len > 0) || uid.kind == V_INT))
        goto not_proven;
    const unsigned char *act_text = content(o, &act), *uid_text = content(o, &uid);
    int64_t us = 0;
    int ts_known = 1; /* else a string converted by the Python path (null here) */
    if (ts.kind == V_INT) {
        if (ts.integer < o->min_epoch || ts.integer > o->max_epoch)
            goto not_proven;
        us = ts.integer > o->ms_threshold ? ts.integer * 1000 : ts.integer * 1000000;
    } else if (ts.kind == V_STRING) {
        const unsigned char *text = content(o, &ts);
        if (!iso_us(text, ts.len, o->naive_utc, &us) || us < o->min_us || us > o->max_us) {
            ts_known = 0;
            us = 0;
            if (put_string_column(&o->str_offsets, &o->str_data, text, ts.len) < 0 ||
                buf_i64(&o->str_spans, p - base) < 0 || buf_i64(&o->str_spans, end - base) < 0)
                return ERROR;
        }
    } else {
        goto not_proven;
    }
    /* The row. */
    if (members) {
        if (buf_byte(attrs, '}') < 0)
            return ERROR;
    }
    if (attrs->len > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a block's column is over 2 GiB");
        return ERROR;
    }
    Py_ssize_t row = o->rows;
    if ((row & 7) == 0 && (buf_byte(&o->attr_valid, 0) < 0 || buf_byte(&o->ts_valid, 0) < 0))
        return ERROR;
    unsigned char bit = (unsigned char)(1u << (row & 7));
    if (members)
        ((unsigned char *)o->attr_valid.data)[row >> 3] |= bit;
    else
        o->attr_nulls++;
    if (ts_known)
        ((unsigned char *)o->ts_valid.data)[row >> 3] |= bit;
    else
        o->ts_nulls++;
    if (buf_i32(&o->attr_offsets, (int32_t)attrs->len) < 0 || buf_i64(&o->ts, us) < 0 ||
        put_string_column(&o->uid_offsets, &o->uid_data, uid_text, uid.len) < 0 ||
        put_string_column(&o->act_offsets, &o->act_data, act_text, act.len) < 0 ||
        buf_i64(&o->lines, line_no) < 0)
        return ERROR;
    o->rows++;
    return OK;

not_proven:
    r = NOT_PROVEN;
fail:
    attrs->len = attr_start;
    return r;
}

static PyObject *as_bytes(Buf *b) {
    return PyBytes_FromStringAndSize(b->data ? b->data : "", b->len);
}

PyDoc_STRVAR(scan_lines_doc,
"scan_lines(data, first_line, max_line_bytes, min_epoch, max_epoch, ms_threshold, min_us,\n"
"           max_us, naive_utc) -> dict\n\n"
"The lines of `data` (numbered from `first_line`) that are proven valid and ordinary, as\n"
"Arrow buffers, and the lines left to the Python path.\n\n"
"Integer timestamps in [min_epoch, max_epoch] are seconds, or milliseconds above\n"
"ms_threshold; ISO-8601 strings of the certain shape whose instant is in [min_us, max_us]\n"
"are converted (naive ones only with naive_utc); other strings are left for the Python path\n"
"to convert (null in `ts`, their text in `str_*`, their line's [start, end) in `str_spans`).\n\n"
"Keys: rows; ts, ts_valid, ts_nulls; str_offsets, str_data, str_spans; uid_offsets,\n"
"uid_data; act_offsets, act_data; attr_valid, attr_nulls, attr_offsets, attr_data; lines\n"
"(line numbers); slow ((line number, start, end) per line left to Python); blank (lines\n"
"of whitespace only). Buffers hold int64 but offsets (int32) and validity bitmaps.");

static PyObject *scan_lines(PyObject *self, PyObject *args) {
    Py_buffer view;
    long long first_line, min_epoch, max_epoch, ms_threshold, min_us, max_us;
    Py_ssize_t max_line_bytes;
    int naive_utc;
    if (!PyArg_ParseTuple(args, "y*LnLLLLLp", &view, &first_line, &max_line_bytes, &min_epoch,
                          &max_epoch, &ms_threshold, &min_us, &max_us, &naive_utc))
        return NULL;
    Out o;
    memset(&o, 0, sizeof o);
    o.min_epoch = min_epoch;
    o.max_epoch = max_epoch;
    o.ms_threshold = ms_threshold;
    o.min_us = min_us;
    o.max_us = max_us;
    o.naive_utc = naive_utc;
    /* Epochs times 10^6 must not overflow: the caller's range is within years 0001-9999. */
    if (min_epoch < -(INT64_MAX / 1000000) || max_epoch > INT64_MAX / 1000) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "epoch range too wide");
        return NULL;
    }
    PyObject *result = NULL;
    const unsigned char *base = view.buf, *p = base, *end = base + view.len;
    int64_t line_no = first_line;
    if (buf_i32(&o.str_offsets, 0) < 0 || buf_i32(&o.uid_offsets, 0) < 0 ||
        buf_i32(&o.act_offsets, 0) < 0 || buf_i32(&o.attr_offsets, 0) < 0)
        goto done;
    while (p < end) {
        const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
        const unsigned char *line_end = nl ? nl : end;
        const unsigned char *q = p;
        while (q < line_end && (*q == ' ' || *q == '\t' || *q == '\r'))
            q++;
        if (q == line_end) {
            o.blank++;
        } else {
            int r = NOT_PROVEN;
            if (line_end - p <= max_line_bytes)
                r = scan_line(&o, p, line_end, base, line_no);
            if (r == ERROR)
                goto done;
            if (r == NOT_PROVEN &&
                (buf_i64(&o.slow, line_no) < 0 || buf_i64(&o.slow, p - base) < 0 ||
                 buf_i64(&o.slow, line_end - base) < 0))
                goto done;
        }
        line_no++;
        p = nl ? nl + 1 : end;
    }
    result = Py_BuildValue(
        "{s:n,s:N,s:N,s:n,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:N,s:n,s:N,s:N,s:N,s:N,s:n}",
        "rows", o.rows, "ts", as_bytes(&o.ts), "ts_valid", as_bytes(&o.ts_valid),
        "ts_nulls", o.ts_nulls, "str_offsets", as_bytes(&o.str_offsets),
        "str_data", as_bytes(&o.str_data), "str_spans", as_bytes(&o.str_spans),
        "uid_offsets", as_bytes(&o.uid_offsets), "uid_data", as_bytes(&o.uid_data),
        "act_offsets", as_bytes(&o.act_offsets), "act_data", as_bytes(&o.act_data),
        "attr_valid", as_bytes(&o.attr_valid), "attr_nulls", o.attr_nulls,
        "attr_offsets", as_bytes(&o.attr_offsets), "attr_data", as_bytes(&o.attr_data),
        "lines", as_bytes(&o.lines), "slow", as_bytes(&o.slow), "blank", o.blank);
done:
    buf_free(&o.ts);
    buf_free(&o.ts_valid);
    buf_free(&o.str_offsets);
    buf_free(&o.str_data);
    buf_free(&o.str_spans);
    buf_free(&o.uid_offsets);
    buf_free(&o.uid_data);
    buf_free(&o.act_offsets);
    buf_free(&o.act_data);
    buf_free(&o.attr_offsets);
    buf_free(&o.attr_data);
    buf_free(&o.attr_valid);
    buf_free(&o.lines);
    buf_free(&o.slow);
    buf_free(&o.scratch);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(flat_objects_doc,
"flat_objects(buf, pos, max_count, max_bytes, max_element) -> (elements, pos, bytes, closed)\n\n"
"The elements of a JSON array from `pos` (where an element begins) that are objects without\n"
"nested objects or arrays, as bytes from `{` to `}`, each with the comma or `]` after it\n"
"consumed: what reader._FLAT_OBJECT matches, one after the other. Stops before anything\n"
"else (another kind of element, a nested bracket, a backslash outside a string, an element\n"
"longer than max_element bytes, the end of buf), after the closing `]` (closed), or once\n"
"max_count elements or max_bytes bytes of them are taken. Returns the position reached\n"
"and the elements' total size. Only the structure is looked at, as in reader.py.");

static int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static PyObject *flat_objects(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, max_count, max_bytes, max_element;
    if (!PyArg_ParseTuple(args, "y*nnnn", &view, &pos, &max_count, &max_bytes, &max_element))
        return NULL;
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *base = view.buf, *end = base + view.len;
    const unsigned char *p = base + (pos < 0 ? 0 : pos > view.len ? view.len : pos);
    Py_ssize_t count = 0, total = 0;
    int closed = 0;
    while (count < max_count && total < max_bytes) {
        const unsigned char *q = p;
        while (q < end && is_ws(*q))
            q++;
        if (q >= end || *q != '{')
            break;
        const unsigned char *start = q++;
        int whole = 0;
        while (q < end) {
            unsigned char c = *q;
            if (c == '"') {
                q++;
                while (q < end && *q != '"') {
                    if (*q == '\\') {
                        if (q + 1 >= end)
                            break;
                        q++;
                    }
                    q++;
                }
                if (q >= end || *q != '"')
                    break;  /* the string goes on past buf */
                q++;
                continue;
            }
            if (c == '}') {
                q++;
                whole = 1;
                break;
            }
            if (c == '{' || c == '[' || c == ']' || c == '\\')
                break;
            q++;
        }
        if (!whole)
            break;
        const unsigned char *stop = q;
        while (q < end && is_ws(*q))
            q++;
        if (q >= end || (*q != ',' && *q != ']') || stop - start > max_element)
            break;
        PyObject *item = PyBytes_FromStringAndSize((const char *)start, stop - start);
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(item);
        count++;
        total += stop - start;
        p = q + 1;
        if (*q == ']') {
            closed = 1;
            break;
        }
    }
    Py_ssize_t reached = p - base;
    PyBuffer_Release(&view);
    return Py_BuildValue("(NnnN)", list, reached, total, PyBool_FromLong(closed));
}

/* --- counting newlines ------------------------------------------------------------------ */

PyDoc_STRVAR(count_newlines_doc,
"count_newlines(buf, start, end) -> int\n\n"
"The number of b'\\n' in buf[start:end] (clamped as a slice is), as bytes.count gives it:\n"
"eight bytes at a time, ~4x faster on JSON Lines and without a slow case.");

static PyObject *count_newlines(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start, end;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &start, &end))
        return NULL;
    if (start < 0)
        start = start + view.len < 0 ? 0 : start + view.len;
    if (end < 0)
        end = end + view.len < 0 ? 0 : end + view.len;
    if (end > view.len)
        end = view.len;
    const unsigned char *p = (const unsigned char *)view.buf + (start < end ? start : end);
    const unsigned char *stop = (const unsigned char *)view.buf + end;
    Py_ssize_t n = 0;
    const uint64_t ones = 0x0101010101010101ULL, low7 = 0x7f7f7f7f7f7f7f7fULL;
    Py_BEGIN_ALLOW_THREADS
    while (stop - p >= 8) {
        /* Per byte: 1 where it is '\n', else 0 (exact: no carry crosses a byte), summed
         * in eight byte-wide counters for at most 255 words, then added up. */
        uint64_t acc = 0;
        for (int k = 0; k < 255 && stop - p >= 8; k++, p += 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            w ^= ones * '\n';
            acc += (~(((w & low7) + low7) | w) >> 7) & ones;
        }
        acc = (acc & 0x00ff00ff00ff00ffULL) + ((acc >> 8) & 0x00ff00ff00ff00ffULL);
        n += (Py_ssize_t)((acc * 0x0001000100010001ULL) >> 48);
    }
    for (; p < stop; p++)
        n += *p == '\n';
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(n);
}

static PyMethodDef methods[] = {
    {"scan_lines", scan_lines, METH_VARARGS, scan_lines_doc},
    {"flat_objects", flat_objects, METH_VARARGS, flat_objects_doc},
    {"count_newlines", count_newlines, METH_VARARGS, count_newlines_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "logwatchd._scan",
    "The common case of the record path in C (see scan_lines).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
