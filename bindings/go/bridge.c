/* bridge.c - the C side of the streaming callbacks: aigw_stream_handler
 * functions that hand each call to the exported Go functions (stream.go),
 * with the cgo.Handle of the Go call state as userdata. */
#include <stdint.h>
#include <aigw.h>
#include "_cgo_export.h"

static int bridge_start(void *ud, int status, const aigw_header *headers, size_t n)
{
    return aigwGoOnStart((uintptr_t)ud, status, (aigw_header *)headers, n);
}

static int bridge_data(void *ud, const char *data, size_t len)
{
    return aigwGoOnData((uintptr_t)ud, (char *)data, len);
}

static int bridge_reset(void *ud, const char *reason_json)
{
    return aigwGoOnReset((uintptr_t)ud, (char *)reason_json);
}

aigw_status aigw_go_stream(aigw_client *client, const aigw_request *req, uintptr_t handle,
                           aigw_response **out, aigw_error **err)
{
    aigw_stream_handler h;
    h.version = AIGW_STREAM_VERSION;
    h.on_start = bridge_start;
    h.on_data = bridge_data;
    h.on_reset = bridge_reset;
    h.on_commit = NULL;
    return aigw_client_stream(client, req, &h, (void *)handle, out, err);
}
