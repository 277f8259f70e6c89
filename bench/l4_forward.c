// The least any proxy can do: each client connection gets its own upstream connection and
// bytes are copied both ways as they come, with no HTTP at all (no parsing, routing,
// header rewriting or pooling). Its CPU per request in bench/compare.sh's plain cases is
// the kernel's floor plus a few hundred instructions, so "x nginx" of this target is the
// best ratio any HTTP proxy could reach against nginx on the machine. Not a product: one
// thread, level-triggered epoll, a blocking connect per accepted client.
//
//   l4_forward LISTEN_PORT UPSTREAM_PORT     (both on 127.0.0.1; SIGTERM stops it)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

// One direction's socket; `pending` holds what its peer could not take yet.
struct End {
  int fd;
  struct End* peer;
  char* pending;
  size_t pending_len, pending_off;
};

static int g_epoll;
static volatile sig_atomic_t g_stop;
static char g_buffer[65536];
// Pairs closed during one epoll_wait batch, freed after it: a later event of the same
// batch may still name the other end.
static struct End* g_closed[512];
static int g_closed_count;

static void onSignal(int sig) { (void)sig; g_stop = 1; }

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  return a;
}

static void watch(struct End* e, uint32_t events, int op) {
  struct epoll_event ev = {.events = events, .data.ptr = e};
  epoll_ctl(g_epoll, op, e->fd, &ev);
}

static void closePair(struct End* e) {
  struct End* p = e->peer;
  close(e->fd);  // also leaves the epoll set
  close(p->fd);
  e->fd = p->fd = -1;
  free(e->pending);
  free(p->pending);
  e->pending = p->pending = NULL;
  g_closed[g_closed_count++] = e < p ? e : p;  // both ends are one allocation
}

// Writes what `to` still owes, then `data`; keeps the rest and waits for EPOLLOUT.
// Returns -1 when the connection is gone.
static int sendTo(struct End* to, const char* data, size_t len) {
  if (to->pending_len == 0) {
    ssize_t n = send(to->fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN) return -1;
    if (n < 0) n = 0;
    data += n;
    len -= (size_t)n;
    if (len == 0) return 0;
  }
  char* grown = realloc(to->pending, to->pending_len + len);
  if (!grown) return -1;
  memcpy(grown + to->pending_len, data, len);
  to->pending = grown;
  to->pending_len += len;
  watch(to, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
  return 0;
}

static int flushPending(struct End* e) {
  while (e->pending_off < e->pending_len) {
    ssize_t n = send(e->fd, e->pending + e->pending_off, e->pending_len - e->pending_off, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    e->pending_off += (size_t)n;
  }
  free(e->pending);
  e->pending = NULL;
  e->pending_len = e->pending_off = 0;
  watch(e, EPOLLIN, EPOLL_CTL_MOD);
  return 0;
}

static void acceptClient(int listener, int upstream_port) {
  int client = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (client < 0) return;
  int upstream = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in to = loopback(upstream_port);
  if (upstream < 0 || connect(upstream, (struct sockaddr*)&to, sizeof to) != 0) {
    close(client);
    if (upstream >= 0) close(upstream);
    return;
  }
  fcntl(upstream, F_SETFL, O_NONBLOCK);
  int one = 1;  // as every proxy sets it
  setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(upstream, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct End* ends = calloc(2, sizeof *ends);
  if (!ends) {
    close(client);
    close(upstream);
    return;
  }
  ends[0].fd = client, ends[0].peer = &ends[1];
  ends[1].fd = upstream, ends[1].peer = &ends[0];
  watch(&ends[0], EPOLLIN, EPOLL_CTL_ADD);
  watch(&ends[1], EPOLLIN, EPOLL_CTL_ADD);
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s LISTEN_PORT UPSTREAM_PORT\n", argv[0]);
    return 2;
  }
  int upstream_port = atoi(argv[2]);
  signal(SIGTERM, onSignal);
  signal(SIGINT, onSignal);
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in at = loopback(atoi(argv[1]));
  if (listener < 0 || bind(listener, (struct sockaddr*)&at, sizeof at) != 0 || listen(listener, 4096) != 0) {
    perror("listen");
    return 1;
  }
  g_epoll = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(g_epoll, EPOLL_CTL_ADD, listener, &lev);
  struct epoll_event events[256];  // at most 256 pairs close per batch: g_closed fits them
  while (!g_stop) {
    int n = epoll_wait(g_epoll, events, 256, 1000);
    for (int i = 0; i < n; ++i) {
      struct End* e = events[i].data.ptr;
      if (!e) {
        acceptClient(listener, upstream_port);
        continue;
      }
      if (e->fd < 0) continue;  // its pair closed earlier in this batch
      if ((events[i].events & EPOLLOUT) && flushPending(e) < 0) {
        closePair(e);
        continue;
      }
      if (!(events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
      ssize_t got = recv(e->fd, g_buffer, sizeof g_buffer, 0);
      if (got < 0 && errno == EAGAIN) continue;
      if (got <= 0 || sendTo(e->peer, g_buffer, (size_t)got) < 0) closePair(e);
    }
    while (g_closed_count > 0) free(g_closed[--g_closed_count]);
  }
  return 0;
}
