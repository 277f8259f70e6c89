// The kernel's share of a proxied request, measured without any proxy: one small send over
// a loopback TCP connection (which on loopback also runs the receiver's TCP processing in
// the sender's context) and the read that takes it. A proxy does this twice per request on
// its own CPU (the request to the upstream, the response to the client), so twice this
// figure is the least kernel time any proxy can spend per request on this machine.
// Prints microseconds per send+recv: the median of 9 batches. See docs/benchmarks.md.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { kBatches = 9, kPerBatch = 20000, kMessage = 160 };  // a small request head's size

static double nowNs(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

static int compareDoubles(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

int main(void) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof addr;
  if (listener < 0 || bind(listener, (struct sockaddr*)&addr, sizeof addr) != 0 ||
      listen(listener, 1) != 0 || getsockname(listener, (struct sockaddr*)&addr, &len) != 0) {
    perror("listen");
    return 1;
  }
  int sender = socket(AF_INET, SOCK_STREAM, 0);
  if (sender < 0 || connect(sender, (struct sockaddr*)&addr, sizeof addr) != 0) {
    perror("connect");
    return 1;
  }
  int receiver = accept(listener, NULL, NULL);
  int one = 1;  // as every proxy sets it
  setsockopt(sender, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(receiver, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char message[kMessage], buffer[65536];
  memset(message, 'x', sizeof message);
  double batches[kBatches];
  for (int b = -1; b < kBatches; ++b) {  // batch -1 warms up
    double start = nowNs();
    for (int i = 0; i < kPerBatch; ++i) {
      if (send(sender, message, sizeof message, MSG_NOSIGNAL) != (ssize_t)sizeof message ||
          recv(receiver, buffer, sizeof buffer, 0) != (ssize_t)sizeof message) {
        perror("send/recv");
        return 1;
      }
    }
    if (b >= 0) batches[b] = (nowNs() - start) / kPerBatch / 1000.0;
  }
  qsort(batches, kBatches, sizeof batches[0], compareDoubles);
  printf("%.2f\n", batches[kBatches / 2]);
  return 0;
}
