/*
 * siphash.c - SipHash-2-4 (Aumasson and Bernstein), 64-bit output, one shot
 * and incremental.  The health tables hash their entries with it under a
 * key drawn per client, so a caller who controls model names cannot aim
 * collisions at a chain; key values are only ever kept as such a keyed hash.
 */
#include "htable.h"

#include <string.h>

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void sip_round(aigw_sip *s)
{
    s->v0 += s->v1;
    s->v1 = ROTL(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = ROTL(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = ROTL(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = ROTL(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = ROTL(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = ROTL(s->v2, 32);
}

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

void aigw__sip_init(aigw_sip *s, const uint8_t key[16])
{
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    s->v0 = k0 ^ 0x736f6d6570736575ULL;
    s->v1 = k1 ^ 0x646f72616e646f6dULL;
    s->v2 = k0 ^ 0x6c7967656e657261ULL;
    s->v3 = k1 ^ 0x7465646279746573ULL;
    s->m = 0;
    s->nm = 0;
    s->len = 0;
}

static void sip_word(aigw_sip *s, uint64_t m)
{
    s->v3 ^= m;
    sip_round(s);
    sip_round(s);
    s->v0 ^= m;
}

void aigw__sip_update(aigw_sip *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    s->len += n;
    while (n > 0 && s->nm != 0) {
        s->m |= (uint64_t)*p++ << (8 * s->nm);
        n--;
        if (++s->nm == 8) {
            sip_word(s, s->m);
            s->m = 0;
            s->nm = 0;
        }
    }
    for (; n >= 8; n -= 8, p += 8)
        sip_word(s, load_le64(p));
    for (; n > 0; n--)
        s->m |= (uint64_t)*p++ << (8 * s->nm++);
}

uint64_t aigw__sip_final(aigw_sip *s)
{
    uint64_t h;
    sip_word(s, s->m | (s->len << 56));
    s->v2 ^= 0xff;
    sip_round(s);
    sip_round(s);
    sip_round(s);
    sip_round(s);
    h = s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
    aigw__wipe(s, sizeof *s);
    return h;
}

uint64_t aigw__siphash24(const uint8_t key[16], const void *data, size_t len)
{
    aigw_sip s;
    aigw__sip_init(&s, key);
    aigw__sip_update(&s, data, len);
    return aigw__sip_final(&s);
}


void aigw__sip_str(aigw_sip *s, const char *str)
{
    aigw__sip_update(s, str, strlen(str) + 1);
}
