/* quickstart.c - one request through failover, with gateway.json from the current directory. */
#include <aigw.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    aigw_config *cfg; aigw_client *client; aigw_request *req; aigw_response *resp;
    aigw_error *err = NULL;
    int rc = 1;
    const char *body = "{\"model\":\"gpt-4o\",\"models\":[\"anthropic:claude-sonnet-4-5\"],"
                       "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}";
    if (aigw_config_load_file("gateway.json", &cfg, &err) != AIGW_OK ||
        aigw_client_new(cfg, &client, &err) != AIGW_OK) { /* libcurl transport */
        fprintf(stderr, "%s\n", aigw_error_message(err));    /* "path: problem" */
        aigw_error_free(err);
        aigw_config_unref(cfg);
        return 2;
    }
    aigw_config_unref(cfg);                   /* the client holds its own reference */
    aigw_request_new(&req);                   /* fails only out of memory: then send says so */
    aigw_request_set_body(req, body, strlen(body));
    if (aigw_client_send(client, req, &resp, &err) == AIGW_OK) {
        size_t len; const char *out = aigw_response_body(resp, &len);
        printf("%d %.*s\n", aigw_response_status(resp), (int)len, out);
        for (size_t i = 0; i < aigw_response_attempt_count(resp); i++) {
            const aigw_attempt *a = aigw_response_attempt(resp, i);
            fprintf(stderr, "attempt %d %s/%s key %s: HTTP %d -> %s\n", aigw_attempt_number(a),
                    aigw_attempt_provider(a), aigw_attempt_model(a), aigw_attempt_key_id(a),
                    aigw_attempt_status_code(a), aigw_attempt_verdict(a));
        }
        rc = aigw_response_outcome(resp) == AIGW_OUTCOME_SERVED ? 0 : 1;
        aigw_response_free(resp);
    } else {
        fprintf(stderr, "%s\n", aigw_error_message(err));
        aigw_error_free(err);
    }
    aigw_request_free(req);
    aigw_client_free(client);
    return rc;
}
