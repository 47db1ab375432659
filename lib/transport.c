/* transport.c - what every transport fills: the response setters, and the
 * names of transport results used in attempt records. */
#include "internal.h"

aigw_status aigw_transport_response_set_status(aigw_transport_response *resp, int http_status)
{
    if (!resp || http_status < 100 || http_status > 999)
        return AIGW_EINVAL;
    resp->status = http_status;
    return AIGW_OK;
}

/* A header that could split the answer handed on to the host (a CR or LF
 * anywhere, or a name that is not one token) is refused. */
static bool header_text_ok(const char *s, bool is_name)
{
    for (; *s; s++) {
        if (*s == '\r' || *s == '\n')
            return false;
        if (is_name && (*s == ':' || *s == ' ' || *s == '\t'))
            return false;
    }
    return true;
}

aigw_status aigw_transport_response_add_header(aigw_transport_response *resp, const char *name,
                                               const char *value)
{
    if (!resp || !name || !value || !*name || !header_text_ok(name, true) ||
        !header_text_ok(value, false))
        return AIGW_EINVAL;
    return aigw__hdrs_add(&resp->headers, name, value) == 0 ? AIGW_OK : AIGW_ENOMEM;
}

aigw_status aigw_transport_response_append_body(aigw_transport_response *resp, const char *data,
                                                size_t len)
{
    if (!resp || (!data && len))
        return AIGW_EINVAL;
    if (len == 0)
        return AIGW_OK;
    /* max_body 0: no cap. */
    if (resp->max_body && (len > resp->max_body || resp->body.len > resp->max_body - len))
        return AIGW_EINVAL;
    return aigw__buf_append(&resp->body, data, len) == 0 ? AIGW_OK : AIGW_ENOMEM;
}

const char *aigw__transport_result_name(aigw_transport_result r)
{
    switch (r) {
    case AIGW_TR_OK: return NULL;
    case AIGW_TR_TIMEOUT: return "timeout";
    case AIGW_TR_CONNECT: return "connect";
    case AIGW_TR_RESET: return "reset";
    case AIGW_TR_DNS: return "dns";
    case AIGW_TR_TLS: return "tls";
    case AIGW_TR_TOO_LARGE: return "too_large";
    case AIGW_TR_PROTOCOL: return "protocol";
    case AIGW_TR_CANCELLED: return "cancelled";
    case AIGW_TR_NOMEM: return "nomem";
    case AIGW_TR_OTHER:
    default: return "other";
    }
}
