/*
 * report.c - the bench's figures as a table (stdout) and as JSON (for trend
 * tracking: a stable id per row, NaN written as null).
 *
 * Rows sit in sections; each compares a baseline (raw libcurl, unless the
 * section or the row says otherwise) with libaigw, gives their ratio, and
 * may carry one of the targets, which the table's last part lists
 * as PASS, FAIL or "not measured".
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ROWS 128
#define MAX_META 32

typedef struct row {
    int section; /* index into sections; -1 for a heading */
    char id[64], label[96], unit[16], note[160];
    double base, lib;
    double paired; /* the ratio given (bench_row_paired); NAN: lib / base */
    bench_target target;
    double limit;
} row;

typedef struct section {
    char id[32], title[96], base_name[48];
} section;

static row rows[MAX_ROWS];
static size_t n_rows;
static section sections[32];
static int n_sections;
static struct {
    char key[32], value[256];
    double num;
    int is_num;
} meta[MAX_META];
static size_t n_meta;

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(const double *v, int n)
{
    double tmp[BENCH_MEDIAN_MAX];
    if (n <= 0 || n > BENCH_MEDIAN_MAX)
        return NAN;
    memcpy(tmp, v, (size_t)n * sizeof *v);
    qsort(tmp, (size_t)n, sizeof tmp[0], cmp_d);
    return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

void bench_section(const char *id, const char *title, const char *base_name)
{
    section *s;
    if (n_sections == (int)(sizeof sections / sizeof sections[0]))
        return;
    s = &sections[n_sections++];
    snprintf(s->id, sizeof s->id, "%s", id);
    snprintf(s->title, sizeof s->title, "%s", title);
    snprintf(s->base_name, sizeof s->base_name, "%s", base_name);
}

void bench_row(const char *id, const char *label, const char *unit, double base, double lib,
               bench_target target, double limit, const char *note)
{
    row *r;
    if (n_rows == MAX_ROWS || n_sections == 0)
        return;
    r = &rows[n_rows++];
    r->section = n_sections - 1;
    snprintf(r->id, sizeof r->id, "%s.%s", sections[r->section].id, id);
    snprintf(r->label, sizeof r->label, "%s", label);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    snprintf(r->note, sizeof r->note, "%s", note ? note : "");
    r->base = base;
    r->lib = lib;
    r->paired = NAN;
    r->target = target;
    r->limit = limit;
}

void bench_row_paired(const char *id, const char *label, const char *unit, double base,
                      double lib, double paired, bench_target target, double limit,
                      const char *note)
{
    size_t before = n_rows;
    bench_row(id, label, unit, base, lib, target, limit, note);
    if (n_rows > before)
        rows[n_rows - 1].paired = paired;
}

void bench_meta(const char *key, const char *value)
{
    if (n_meta == MAX_META)
        return;
    snprintf(meta[n_meta].key, sizeof meta[n_meta].key, "%s", key);
    snprintf(meta[n_meta].value, sizeof meta[n_meta].value, "%s", value ? value : "");
    meta[n_meta++].is_num = 0;
}

void bench_meta_num(const char *key, double value)
{
    if (n_meta == MAX_META)
        return;
    snprintf(meta[n_meta].key, sizeof meta[n_meta].key, "%s", key);
    meta[n_meta].num = value;
    meta[n_meta++].is_num = 1;
}

static double ratio(const row *r)
{
    if (!isnan(r->paired))
        return r->paired;
    if (isnan(r->base) || isnan(r->lib) || r->base == 0)
        return NAN;
    return r->lib / r->base;
}

/* The value a target looks at. */
static double target_value(const row *r)
{
    switch (r->target) {
    case BENCH_T_RATIO_LE:
    case BENCH_T_RATIO_GE:
        return ratio(r);
    case BENCH_T_LIB_LE:
        return r->lib;
    case BENCH_T_DIFF_LE:
        return isnan(r->base) || isnan(r->lib) ? NAN : r->lib - r->base;
    default:
        return NAN;
    }
}

/* 1 pass, 0 fail, -1 not measured or no target. */
static int target_pass(const row *r)
{
    double v = target_value(r);
    if (r->target == BENCH_T_NONE || isnan(v))
        return -1;
    if (r->target == BENCH_T_RATIO_GE)
        return v >= r->limit;
    return v <= r->limit;
}

static const char *target_op(const row *r)
{
    switch (r->target) {
    case BENCH_T_RATIO_LE:
        return "ratio <=";
    case BENCH_T_RATIO_GE:
        return "ratio >=";
    case BENCH_T_LIB_LE:
        return "<=";
    case BENCH_T_DIFF_LE:
        return "diff <=";
    default:
        return "";
    }
}

static void fmt(char *out, size_t size, double v, const char *unit)
{
    if (isnan(v))
        snprintf(out, size, "-");
    else if (strcmp(unit, "Ir") == 0 || strcmp(unit, "KiB") == 0 || strcmp(unit, "req/s") == 0)
        snprintf(out, size, "%.0f", v);
    else if (strcmp(unit, "calls") == 0 || strcmp(unit, "cmds") == 0)
        snprintf(out, size, "%.4f", v);
    else
        snprintf(out, size, "%.1f", v);
}

static void fmt_limit(char *out, size_t size, const row *r)
{
    if (r->target == BENCH_T_NONE)
        out[0] = '\0';
    else if (r->target == BENCH_T_RATIO_LE || r->target == BENCH_T_RATIO_GE)
        snprintf(out, size, "%s %.2f", r->target == BENCH_T_RATIO_LE ? "<=" : ">=", r->limit);
    else
        snprintf(out, size, "%s %g %s", r->target == BENCH_T_DIFF_LE ? "diff <=" : "<=",
                 r->limit, r->unit);
}

void bench_report_print(void)
{
    size_t i;
    int sec = -1, pass = 0, fail = 0, none = 0;
    char b[32], l[32], q[32], lim[48];
    for (i = 0; i < n_rows; i++) {
        const row *r = &rows[i];
        double rt = ratio(r);
        int p = target_pass(r);
        if (r->section != sec) {
            sec = r->section;
            printf("\n%s\n  %-50s %12s %12s %8s  %-16s\n", sections[sec].title, "",
                   sections[sec].base_name, "libaigw", "ratio", "target");
        }
        fmt(b, sizeof b, r->base, r->unit);
        fmt(l, sizeof l, r->lib, r->unit);
        if (isnan(rt))
            snprintf(q, sizeof q, "-");
        else
            snprintf(q, sizeof q, "%.3f", rt);
        fmt_limit(lim, sizeof lim, r);
        printf("  %-50s %12s %12s %8s  %-16s %s\n", r->label, b, l, q, lim,
               r->target == BENCH_T_NONE ? "" : p < 0 ? "n/a" : p ? "PASS" : "FAIL");
        if (r->note[0])
            printf("  %-50s   (%s)\n", "", r->note);
    }
    printf("\nTargets\n");
    for (i = 0; i < n_rows; i++) {
        const row *r = &rows[i];
        int p = target_pass(r);
        double v = target_value(r);
        if (r->target == BENCH_T_NONE)
            continue;
        fmt_limit(lim, sizeof lim, r);
        if (isnan(v))
            snprintf(q, sizeof q, "-");
        else if (r->target == BENCH_T_RATIO_LE || r->target == BENCH_T_RATIO_GE)
            snprintf(q, sizeof q, "%.3f", v);
        else
            fmt(q, sizeof q, v, r->unit);
        printf("  %-4s  %-34s %-44s %10s  %s\n", p < 0 ? "n/a" : p ? "PASS" : "FAIL", r->id,
               r->label, q, lim);
        if (p < 0)
            none++;
        else if (p)
            pass++;
        else
            fail++;
    }
    printf("  %d passed, %d failed, %d not measured\n", pass, fail, none);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double v)
{
    if (isnan(v) || isinf(v))
        fputs("null", f);
    else
        fprintf(f, "%.6g", v);
}

int bench_report_json(const char *path)
{
    FILE *f = fopen(path, "w");
    size_t i;
    int pass = 0, fail = 0, none = 0;
    if (!f)
        return -1;
    fputs("{\n  \"meta\": {", f);
    for (i = 0; i < n_meta; i++) {
        fputs(i ? ",\n    " : "\n    ", f);
        json_str(f, meta[i].key);
        fputs(": ", f);
        if (meta[i].is_num)
            json_num(f, meta[i].num);
        else
            json_str(f, meta[i].value);
    }
    fputs("\n  },\n  \"rows\": [", f);
    for (i = 0; i < n_rows; i++) {
        const row *r = &rows[i];
        int p = target_pass(r);
        fputs(i ? ",\n    {" : "\n    {", f);
        fputs("\"id\": ", f);
        json_str(f, r->id);
        fputs(", \"section\": ", f);
        json_str(f, sections[r->section].title);
        fputs(", \"label\": ", f);
        json_str(f, r->label);
        fputs(", \"unit\": ", f);
        json_str(f, r->unit);
        fputs(", \"baseline_name\": ", f);
        json_str(f, sections[r->section].base_name);
        fputs(", \"baseline\": ", f);
        json_num(f, r->base);
        fputs(", \"libaigw\": ", f);
        json_num(f, r->lib);
        fputs(", \"ratio\": ", f);
        json_num(f, ratio(r));
        if (r->target != BENCH_T_NONE) {
            fputs(", \"target\": {\"op\": ", f);
            json_str(f, target_op(r));
            fputs(", \"limit\": ", f);
            json_num(f, r->limit);
            fputs(", \"value\": ", f);
            json_num(f, target_value(r));
            fprintf(f, ", \"pass\": %s}", p < 0 ? "null" : p ? "true" : "false");
            if (p < 0)
                none++;
            else if (p)
                pass++;
            else
                fail++;
        }
        if (r->note[0]) {
            fputs(", \"note\": ", f);
            json_str(f, r->note);
        }
        fputs("}", f);
    }
    fprintf(f, "\n  ],\n  \"targets\": {\"passed\": %d, \"failed\": %d, \"not_measured\": %d}\n}\n",
            pass, fail, none);
    return fclose(f) == 0 ? 0 : -1;
}
