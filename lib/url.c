/* url.c - the origin of a URL ("scheme://host:port"), the name a host's
 * circuit breaker goes by: default ports made explicit, scheme and host
 * lower-cased, user info dropped, so every spelling of one server meets at
 * one breaker. */
#include "internal.h"

#include <string.h>

/* The port: digits, 1..65535 (leading zeros allowed); -1 otherwise. */
static long parse_port(const char *s, size_t n)
{
    long v = 0;
    size_t i;
    if (n == 0)
        return -1;
    for (i = 0; i < n; i++) {
        if (!aigw__is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
        if (v > 65535)
            return -1;
    }
    return v > 0 ? v : -1;
}

static long default_port(const char *scheme, size_t n)
{
    if ((n == 4 && aigw__strncasecmp(scheme, "http", 4) == 0) ||
        (n == 2 && aigw__strncasecmp(scheme, "ws", 2) == 0))
        return 80;
    if ((n == 5 && aigw__strncasecmp(scheme, "https", 5) == 0) ||
        (n == 3 && aigw__strncasecmp(scheme, "wss", 3) == 0))
        return 443;
    return -1;
}

/* "scheme://host:port" for url (allocated), or NULL when it has no scheme,
 * no host, a bad port, or no port and a scheme without a default one. */
char *aigw__url_origin(const char *url)
{
    const char *p = url, *auth, *end, *at, *host, *host_end, *port = NULL;
    size_t scheme_len, i;
    long portnum;
    aigw_buf b = AIGW_BUF_INIT;
    if (!aigw__is_alpha((unsigned char)*p))
        return NULL;
    while (aigw__is_alpha((unsigned char)*p) || aigw__is_digit((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
        p++;
    if (strncmp(p, "://", 3) != 0)
        return NULL;
    scheme_len = (size_t)(p - url);
    auth = p + 3;
    end = auth + strcspn(auth, "/?#");
    for (at = NULL, p = auth; p < end; p++)
        if (*p == '@')
            at = p;
    host = at ? at + 1 : auth;
    if (*host == '[') {
        const char *close = memchr(host, ']', (size_t)(end - host));
        if (!close || close == host + 1)
            return NULL;
        host_end = close + 1;
        if (host_end < end && *host_end != ':')
            return NULL;
    } else {
        host_end = memchr(host, ':', (size_t)(end - host));
        if (!host_end)
            host_end = end;
    }
    if (host_end == host)
        return NULL;
    for (p = host; p < host_end; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return NULL;
    if (host_end < end)
        port = host_end + 1;
    portnum = port && port < end ? parse_port(port, (size_t)(end - port))
                                 : default_port(url, scheme_len);
    if (portnum < 0)
        return NULL;
    for (i = 0; i < scheme_len; i++) {
        char c = (char)aigw__lower((unsigned char)url[i]);
        if (aigw__buf_append(&b, &c, 1) != 0)
            goto fail;
    }
    if (aigw__buf_puts(&b, "://") != 0)
        goto fail;
    for (p = host; p < host_end; p++) {
        char c = (char)aigw__lower((unsigned char)*p);
        if (aigw__buf_append(&b, &c, 1) != 0)
            goto fail;
    }
    if (aigw__buf_printf(&b, ":%ld", portnum) != 0)
        goto fail;
    return aigw__buf_take(&b);
fail:
    aigw__buf_free(&b);
    return NULL;
}
