/* url.c - URLs, parsed by libcurl's URL API (curl_url, libcurl >= 7.62):
 * the same parser as the transport that will use them.  Used for the base
 * URLs of a configuration (config.c), for whether a base URL has a path
 * and for the origin ("scheme://host:port") a host's circuit breaker goes
 * by (resolved.c, once per client and configuration; health.c): default
 * ports made explicit, scheme and host
 * lower-cased, user info dropped, so every spelling of one server meets at
 * one breaker.
 *
 * curl_url is lenient where a configuration should not be, so a few things
 * are settled on the text before it sees it: the scheme's form (curl takes
 * "1http:"), an empty authority (curl reads "https:///v1" as host "v1"),
 * percent-encoding in a host (curl decodes "exa%6dple.com"), and several
 * '@' in an authority (the user info ends at the last one, as browsers read
 * it; curl refuses the URL). */
#include "internal.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

/* ---- the text before curl ---- */

/* Where the authority of url lies ([*auth, *auth_end)) and how many '@' it
 * holds; NULL, or a problem. */
static const char *split(const char *url, const char **auth, const char **auth_end,
                         size_t *n_at)
{
    const char *p = url;
    size_t i;
    for (i = 0; url[i]; i++)
        if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f)
            return "must not contain whitespace or control characters";
    if (!aigw__is_alpha((unsigned char)*p))
        return "must start with a scheme such as https://";
    while (aigw__is_alpha((unsigned char)*p) || aigw__is_digit((unsigned char)*p) || *p == '+' ||
           *p == '-' || *p == '.')
        p++;
    if (strncmp(p, "://", 3) != 0)
        return "must start with a scheme such as https://";
    *auth = p + 3;
    *auth_end = *auth + strcspn(*auth, "/?#");
    if (*auth_end == *auth)
        return "must have a host";
    for (*n_at = 0, p = *auth; p < *auth_end; p++)
        *n_at += *p == '@';
    return NULL;
}

/* The host as written: after the last '@', up to the port.  A '%' outside
 * an IPv6 literal (whose zone is written "%25eth0") is percent-encoding. */
static bool host_encoded(const char *auth, const char *auth_end)
{
    const char *p, *host = auth;
    for (p = auth; p < auth_end; p++)
        if (*p == '@')
            host = p + 1;
    if (host < auth_end && *host == '[')
        return false; /* curl checks the literal */
    return memchr(host, '%', (size_t)(auth_end - host)) != NULL;
}

/* url with every '@' of the authority but the last written as %40. */
static char *escape_ats(const char *url, const char *auth, const char *auth_end, size_t n_at)
{
    aigw_buf b = AIGW_BUF_INIT;
    const char *p;
    int rc = aigw__buf_append(&b, url, (size_t)(auth - url));
    for (p = auth; p < auth_end; p++) {
        if (*p == '@' && n_at > 1) {
            rc |= aigw__buf_puts(&b, "%40");
            n_at--;
        } else {
            rc |= aigw__buf_append(&b, p, 1);
        }
    }
    rc |= aigw__buf_puts(&b, auth_end);
    if (rc != 0) {
        aigw__buf_free(&b);
        return NULL;
    }
    return aigw__buf_take(&b);
}

/* ---- curl ---- */

static const char *curl_problem(CURLUcode rc)
{
    switch (rc) {
    case CURLUE_BAD_PORT_NUMBER: return "has an invalid port";
    case CURLUE_NO_HOST: return "must have a host";
#if LIBCURL_VERSION_NUM >= 0x075100 /* 7.81: finer codes */
    case CURLUE_BAD_HOSTNAME:
    case CURLUE_BAD_IPV6: return "has an invalid host";
    case CURLUE_BAD_SCHEME: return "must start with a scheme such as https://";
    case CURLUE_BAD_LOGIN:
    case CURLUE_BAD_USER:
    case CURLUE_BAD_PASSWORD: return "has invalid user info (user:password@)";
    case CURLUE_BAD_PATH: return "has an invalid path";
#endif
    default: return "is not a valid URL";
    }
}

/* A part of h as an allocated copy (lower-cased when asked); NULL when the
 * URL has none.  -2 out of memory. */
static int get_part(CURLU *h, CURLUPart what, bool lower, char **out)
{
    char *v = NULL;
    size_t i;
    CURLUcode rc = curl_url_get(h, what, &v, 0);
    *out = NULL;
    if (rc == CURLUE_OUT_OF_MEMORY)
        return -2;
    if (rc != CURLUE_OK || !v) {
        curl_free(v);
        return 0;
    }
    *out = aigw__strdup(v);
    curl_free(v);
    if (!*out)
        return -2;
    for (i = 0; lower && (*out)[i]; i++)
        (*out)[i] = (char)aigw__lower((unsigned char)(*out)[i]);
    return 0;
}

/* Whether h has the part (user, password: only whether, and the copy curl
 * made is wiped); -2 out of memory. */
static int has_part(CURLU *h, CURLUPart what, bool *has)
{
    char *v = NULL;
    CURLUcode rc = curl_url_get(h, what, &v, 0);
    *has = rc == CURLUE_OK && v;
    if (v)
        aigw__wipe(v, strlen(v));
    curl_free(v);
    return rc == CURLUE_OUT_OF_MEMORY ? -2 : 0;
}

static long default_port(const char *scheme)
{
    if (strcmp(scheme, "http") == 0 || strcmp(scheme, "ws") == 0)
        return 80;
    if (strcmp(scheme, "https") == 0 || strcmp(scheme, "wss") == 0)
        return 443;
    return -1;
}

/* The parts of a URL curl accepted. */
static const char *read_parts(CURLU *h, aigw_url *out, int *rc)
{
    char *port = NULL, *zone = NULL;
    bool user = false, password = false;
    const char *why = NULL;
    *rc = get_part(h, CURLUPART_SCHEME, true, &out->scheme);
    *rc |= get_part(h, CURLUPART_HOST, true, &out->host);
#if LIBCURL_VERSION_NUM >= 0x074100 /* 7.65 */
    *rc |= get_part(h, CURLUPART_ZONEID, false, &zone);
#endif
    *rc |= get_part(h, CURLUPART_PORT, false, &port);
    *rc |= get_part(h, CURLUPART_PATH, false, &out->path);
    *rc |= has_part(h, CURLUPART_USER, &user);
    *rc |= has_part(h, CURLUPART_PASSWORD, &password);
    if (*rc == 0 && (!out->scheme || !out->host || !out->path))
        why = "is not a valid URL";
    if (*rc == 0 && !why && zone && out->host[0] == '[') {
        /* "[fe80::1]" + "eth0" -> "[fe80::1%25eth0]", as written */
        aigw_buf b = AIGW_BUF_INIT;
        *rc = aigw__buf_append(&b, out->host, strlen(out->host) - 1) |
              aigw__buf_printf(&b, "%%25%s]", zone);
        if (*rc != 0) {
            aigw__buf_free(&b);
            *rc = -2;
        } else {
            aigw__free(out->host);
            out->host = aigw__buf_take(&b);
        }
    }
    if (*rc == 0 && !why) {
        out->has_userinfo = user || password;
        out->port_written = port != NULL;
        /* curl took the digits (leading zeros and all, up to 65535) */
        out->port = port ? strtol(port, NULL, 10) : default_port(out->scheme);
        if (port && out->port == 0)
            why = "has an invalid port";
    }
    aigw__free(port);
    aigw__free(zone);
    if (*rc != 0)
        *rc = -2;
    return why;
}

void aigw__url_free(aigw_url *u)
{
    if (!u)
        return;
    aigw__free(u->scheme);
    aigw__free(u->host);
    aigw__free(u->path);
    memset(u, 0, sizeof *u);
    u->port = -1;
}

int aigw__url_parse(const char *url, aigw_url *out, char **why)
{
    const char *auth = NULL, *auth_end = NULL, *problem;
    char *text = NULL;
    size_t n_at = 0;
    CURLU *h = NULL;
    CURLUcode cu;
    int rc = 0;
    memset(out, 0, sizeof *out);
    out->port = -1;
    if (why)
        *why = NULL;
    problem = url ? split(url, &auth, &auth_end, &n_at) : "is not a URL";
    if (!problem && host_encoded(auth, auth_end))
        problem = "has an invalid host (percent-encoded)";
    if (!problem && n_at > 1 && !(text = escape_ats(url, auth, auth_end, n_at)))
        return -2;
    if (!problem && !(h = curl_url()))
        rc = -2;
    if (!problem && rc == 0) {
        cu = curl_url_set(h, CURLUPART_URL, text ? text : url,
                          CURLU_NON_SUPPORT_SCHEME | CURLU_PATH_AS_IS);
        if (cu == CURLUE_OUT_OF_MEMORY)
            rc = -2;
        else if (cu != CURLUE_OK)
            problem = curl_problem(cu);
        else
            problem = read_parts(h, out, &rc);
    }
    curl_url_cleanup(h);
    aigw__free(text);
    if (rc == 0 && problem) {
        rc = -1;
        if (why && !(*why = aigw__strdup(problem)))
            rc = -2;
    }
    if (rc == 0 && url) {
        const char *q = strchr(auth_end, '?'), *f = strchr(auth_end, '#');
        out->has_fragment = f != NULL;
        out->has_query = q != NULL && (!f || q < f);
    }
    if (rc != 0)
        aigw__url_free(out);
    return rc;
}

/* The origin of a parsed URL, or NULL (no port; out of memory: *nomem). */
static char *origin_of(const aigw_url *u, bool *nomem)
{
    aigw_buf b = AIGW_BUF_INIT;
    char *origin = NULL;
    if (u->port <= 0)
        return NULL;
    if (aigw__buf_printf(&b, "%s://%s:%ld", u->scheme, u->host, u->port) == 0)
        origin = aigw__buf_take(&b);
    else
        *nomem = true;
    aigw__buf_free(&b);
    return origin;
}

char *aigw__url_origin(const char *url)
{
    aigw_url u;
    bool nomem = false;
    char *origin;
    if (aigw__url_parse(url, &u, NULL) != 0)
        return NULL;
    origin = origin_of(&u, &nomem);
    aigw__url_free(&u);
    return origin;
}

int aigw__url_split(const char *url, bool *has_path, char **origin)
{
    aigw_url u;
    bool nomem = false;
    int rc = aigw__url_parse(url, &u, NULL);
    *has_path = false;
    *origin = NULL;
    if (rc == -2)
        return -2;
    if (rc != 0)
        return 0;
    *has_path = strcmp(u.path, "/") != 0 && u.path[0] != '\0';
    *origin = origin_of(&u, &nomem);
    aigw__url_free(&u);
    return nomem ? -2 : 0;
}
