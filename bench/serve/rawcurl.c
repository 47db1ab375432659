/*
 * rawcurl.c - the floor under any libcurl-based gateway (scripts/bench-serve):
 * one easy handle, options and headers set once, the same POST sent N times
 * in a row to URL over one keep-alive connection; prints the client's CPU
 * (user + system) and wall time per request.
 *
 *   rawcurl URL [N]
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
static size_t sink(char *p, size_t s, size_t n, void *u) { (void)p; (void)u; return s * n; }
static double cpu(void) { struct rusage r; getrusage(RUSAGE_SELF, &r);
  return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6; }
int main(int argc, char **argv) {
  int n = argc > 2 ? atoi(argv[2]) : 20000;
  const char *body = "{\"model\":\"m1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
  CURL *h = curl_easy_init();
  struct curl_slist *hd = NULL;
  hd = curl_slist_append(hd, "Content-Type: application/json");
  hd = curl_slist_append(hd, "Authorization: Bearer sk-bench-ok");
  curl_easy_setopt(h, CURLOPT_URL, argv[1]);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
  for (int i = 0; i < 500; i++) curl_easy_perform(h);
  double c0 = cpu(); struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < n; i++) if (curl_easy_perform(h) != CURLE_OK) return 1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double c1 = cpu();
  printf("raw libcurl (one easy handle, options set once, sequential): %.1f us CPU/req, %.1f us wall/req\n", (c1 - c0) / n * 1e6,
         ((t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9) / n * 1e6);
  return 0;
}
