// test_header.cpp - aigw.h compiles as C++ (-pedantic -Werror) and links.
#include "aigw.h"

#include <cstring>

int main()
{
    aigw_config *cfg = nullptr;
    aigw_error *err = nullptr;
    const char json[] = "{\"name\":\"x\"}";
    if (aigw_config_parse(json, std::strlen(json), &cfg, &err) != AIGW_OK)
        return 1;
    aigw_config_unref(cfg);
    return std::strcmp(aigw_version_string(), AIGW_VERSION_STRING) == 0 ? 0 : 1;
}
