/*
 * random.c - random inputs for the tests that hold the library to a
 * reference (cJSON) over many texts: a xorshift64 generator, seeded by the
 * test so that a failure comes again, and texts made of JSON's pieces.
 */
#include <string.h>

#include "support.h"

uint64_t xorshift64(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

/* Tokens, their parts and their near misses: broken escapes and surrogates,
 * numbers cut short, misspelt literals, a BOM, control bytes. */
static const char *const JSON_PIECES[] = {
    "{", "}", "[", "]", ",", ":", "\"", "\"a\"", "\\", "\\u", "\\ud83d\\ude00", "\\udc00",
    "\\uzzzz", "1", "-", "0", ".", "e", "+", "12.5e-3", "null", "nul", "true", "false", " ",
    "\n", "\x01", "\xef\xbb\xbf", "x", "\"k\":", "{\"a\":", "[[", "]]", "\"\\\"\"",
};

size_t json_pieces(uint64_t *seed, char *buf, size_t size)
{
    const size_t n_pieces = sizeof JSON_PIECES / sizeof *JSON_PIECES;
    size_t len = 0, n = 1 + xorshift64(seed) % 24, k;
    for (k = 0; k < n; k++) {
        const char *t = JSON_PIECES[xorshift64(seed) % n_pieces];
        size_t tlen = strlen(t);
        if (len + tlen >= size)
            break;
        memcpy(buf + len, t, tlen);
        len += tlen;
    }
    if (size > 0)
        buf[len] = '\0';
    return len;
}
