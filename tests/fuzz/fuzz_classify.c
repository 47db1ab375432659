/* fuzz_classify.c - the failure classifier (lib/classify.c) on an upstream
 * answer decoded from the input:
 *   [0..1]  the status, big-endian: below 0xFF00 taken modulo 1000, else
 *           -256..-1 (a status no server sends)
 *   then    header lines "name: value" up to a blank line (LF or CRLF;
 *           trimmed and skipped as lib/transport_curl.c does)
 *   the rest the body, in a buffer of exactly its size
 *
 * The classifier takes no provider: one body shape per provider (OpenAI,
 * Azure, Anthropic, Gemini) is told apart by its content, which the seed
 * corpus covers.  It is called for every transport result, at three
 * clocks (2026, 1970, 2100: RFC 850 two-digit years and past/future dates
 * read differently), with and without wait_ms, with the headers and
 * without.  Checked (abort() on failure): the class is in range and named
 * (none only for success), non-OK transport results map to timeout or
 * network with no wait, 2xx is success with no wait, the wait is -1 or
 * within [0, 24 h], and a repeated call gives the same answer.
 */
#include "internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define WAIT_MAX_MS (INT64_C(24) * 3600 * 1000)

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_classify: invariant violated: %s\n", what);
        abort();
    }
}

static bool is_ows(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* Header lines from s up to a blank line; returns the offset of the body. */
static size_t read_headers(const uint8_t *s, size_t n, aigw_hdrs *h)
{
    size_t i = 0;
    while (i < n) {
        const uint8_t *line = s + i, *lf = memchr(line, '\n', n - i), *colon;
        size_t end = lf ? (size_t)(lf - line) : n - i, nend, vs, ve;
        i += end + (lf ? 1 : 0);
        if (end > 0 && line[end - 1] == '\r')
            end--;
        if (end == 0)
            break; /* the blank line: the body follows */
        colon = memchr(line, ':', end);
        if (!colon || colon == line)
            continue;
        nend = (size_t)(colon - line);
        while (nend && is_ows(line[nend - 1]))
            nend--;
        vs = (size_t)(colon - line) + 1;
        while (vs < end && is_ows(line[vs]))
            vs++;
        ve = end;
        while (ve > vs && is_ows(line[ve - 1]))
            ve--;
        check(aigw__hdrs_addn(h, (const char *)line, nend, (const char *)line + vs, ve - vs) == 0,
              "aigw__hdrs_addn failed");
    }
    return i;
}

static void check_answer(aigw_transport_result tr, int status, aigw_class c, int64_t wait)
{
    check((unsigned)c < AIGW_CLASS__COUNT, "class out of range");
    check((aigw__class_name(c) == NULL) == (c == AIGW_CLASS_NONE), "class name");
    check(wait == -1 || (wait >= 0 && wait <= WAIT_MAX_MS), "wait out of [-1, 24h]");
    if (tr != AIGW_TR_OK) {
        check(c == (tr == AIGW_TR_TIMEOUT ? AIGW_CLASS_TIMEOUT : AIGW_CLASS_NETWORK),
              "transport failure class");
        check(wait == -1, "a transport failure asked for a wait");
        return;
    }
    if (status >= 200 && status <= 299)
        check(c == AIGW_CLASS_NONE && wait == -1, "2xx is not a success without wait");
    else
        check(c != AIGW_CLASS_NONE, "a non-2xx answer classed as success");
    if (status >= 300 && status <= 399)
        check(c == AIGW_CLASS_REDIRECT, "3xx is not a redirect");
    if (status == 401 || status == 403)
        check(c == AIGW_CLASS_AUTH, "401/403 is not auth");
    if (status == 429)
        check(c == AIGW_CLASS_RATE_LIMIT || c == AIGW_CLASS_QUOTA, "429 class");
    if (status < 100 || status > 599)
        check(c == AIGW_CLASS_NETWORK, "a status out of range is not network");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int64_t clocks[] = {INT64_C(1795600800000), 0, INT64_C(4102444800000)};
    aigw_hdrs h = {NULL, 0, 0};
    unsigned v;
    int status, tr;
    size_t body_at, body_len, k;
    char *body = NULL;

    if (size < 2)
        return 0;
    v = (unsigned)data[0] << 8 | data[1];
    status = v < 0xFF00 ? (int)(v % 1000) : (int)v - 0x10000;
    body_at = 2 + read_headers(data + 2, size - 2, &h);
    body_len = size - body_at;
    if (body_len) {
        body = malloc(body_len);
        check(body != NULL, "out of memory in the harness");
        memcpy(body, data + body_at, body_len);
    }

    for (k = 0; k < sizeof clocks / sizeof clocks[0]; k++) {
        int64_t wait = -2, again = -2, bare_wait = -2;
        aigw_class c = aigw__classify(AIGW_TR_OK, status, &h, body, body_len, clocks[k], &wait);
        check_answer(AIGW_TR_OK, status, c, wait);
        check(aigw__classify(AIGW_TR_OK, status, &h, body, body_len, clocks[k], &again) == c &&
                  again == wait,
              "a second call gave another answer");
        check(aigw__classify(AIGW_TR_OK, status, &h, body, body_len, clocks[k], NULL) == c,
              "the class depends on wait_ms being asked for");
        /* without headers: no crash, and still a class of the same sort */
        c = aigw__classify(AIGW_TR_OK, status, NULL, body, body_len, clocks[k], &bare_wait);
        check_answer(AIGW_TR_OK, status, c, bare_wait);
    }
    for (tr = AIGW_TR_TIMEOUT; tr <= AIGW_TR_CANCELLED; tr++) {
        int64_t wait = -2;
        aigw_class c = aigw__classify((aigw_transport_result)tr, status, &h, body, body_len,
                                      clocks[0], &wait);
        check_answer((aigw_transport_result)tr, status, c, wait);
    }

    free(body);
    aigw__hdrs_free(&h);
    return 0;
}
