#include "gateway/server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "gateway/config/config_loader.h"
#include "gateway/admin/health.h"
#include "gateway/upstream/health_checker.h"
#include "gateway/http_util.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/shutdown.h"
#include "gateway/tracing/exporter.h"

namespace gw {

namespace {

constexpr int kListenBacklog = 4096;

// Binds one listening socket. With SO_REUSEPORT every worker binds its own socket on the
// same address and the kernel spreads new connections across them (libuv 1.44 has no
// UV_TCP_REUSEPORT, so the option is set here and the fd handed to uv_tcp_open).
int bindListener(const sockaddr* sa, socklen_t len, bool reuseport, std::string* error) {
  int fd = ::socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::strerror(errno);
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (::bind(fd, sa, len) != 0 || ::listen(fd, kListenBacklog) != 0) {
    *error = std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

// SO_REUSEPORT would let this process share a port with any other process of the same
// user that set it too: a second gateway started by mistake would silently take half the
// connections. A plain bind (no listen, closed at once) fails as it should when anyone
// listens there. Returns false with *error set in that case.
bool addressIsFree(const sockaddr* sa, socklen_t len, std::string* error) {
  int port = sa->sa_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6*>(sa)->sin6_port
                                       : reinterpret_cast<const sockaddr_in*>(sa)->sin_port;
  if (port == 0) return true;  // the kernel picks a free port
  int fd = ::socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::strerror(errno);
    return false;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // TIME_WAIT is no conflict
  bool free = ::bind(fd, sa, len) == 0;
  if (!free) *error = std::strerror(errno);
  ::close(fd);
  return free;
}

// Binds `count` sockets on `address`; a port of 0 is resolved by the first bind and
// reused by the others, so that all workers share one ephemeral port.
bool bindShared(const SocketAddress& address, size_t count, bool reuseport, std::vector<int>& fds,
                std::string* error, std::string* bound_text) {
  sockaddr_storage ss = address.storage;
  socklen_t len = address.length;
  for (size_t i = 0; i < count; ++i) {
    int fd = bindListener(reinterpret_cast<sockaddr*>(&ss), len, reuseport, error);
    if (fd < 0) return false;
    if (i == 0) {
      socklen_t l = sizeof ss;
      getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &l);
      char host[64] = {0};
      int port = 0;
      if (ss.ss_family == AF_INET) {
        auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        port = ntohs(s4->sin_port);
        *bound_text = std::string(host) + ":" + std::to_string(port);
      } else {
        auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        port = ntohs(s6->sin6_port);
        *bound_text = "[" + std::string(host) + "]:" + std::to_string(port);
      }
    }
    fds.push_back(fd);
  }
  return true;
}

uint16_t reloadResultLabel(bool ok) {
  static const uint16_t kSuccess = metrics::labelId("success");
  static const uint16_t kFailure = metrics::labelId("failure");
  return ok ? kSuccess : kFailure;
}

// The series whose labels the configuration fixes are in the first scrape, at zero,
// instead of appearing with their first event: an alert on a counter's rate, or a panel of
// breaker states, needs the zero to start from.
void declareConfiguredSeries(const Config& cfg) {
  using metrics::Id;
  metrics::MetricStore& store = metrics::process();
  store.add(Id::RequestsInFlight, {}, 0);
  store.add(Id::ConfigReloads, {reloadResultLabel(true), 0, 0}, 0);
  store.add(Id::ConfigReloads, {reloadResultLabel(false), 0, 0}, 0);
  for (const ListenerConfig& l : cfg.listeners) {
    store.add(Id::ConnectionsActive, {l.metrics_label, 0, 0}, 0);
    store.add(Id::ConnectionsTotal, {l.metrics_label, 0, 0}, 0);
    if (!l.tls) continue;
    store.add(Id::TlsHandshakes, {l.metrics_label, 0, 0}, 0);
    store.add(Id::TlsHandshakeErrors, {l.metrics_label, 0, 0}, 0);
  }
  for (const UpstreamConfig& u : cfg.upstreams) {
    store.add(Id::UpstreamConnectFailures, {u.metrics_label, 0, 0}, 0);
    store.add(Id::CircuitBreakerOpen, {u.metrics_label, 0, 0}, 0);
  }
}

}  // namespace

Server::Server(std::string config_path) : config_path_(std::move(config_path)) {}

Server::~Server() {
  for (auto& sockets : worker_sockets_) {
    for (auto& s : sockets) {
      if (s.fd >= 0 && !started()) ::close(s.fd);
    }
  }
}

std::shared_ptr<const Runtime> Server::runtime() const {
  std::lock_guard<std::mutex> lock(runtime_mutex_);
  return runtime_;
}

std::shared_ptr<const Runtime> Server::buildRuntime(std::shared_ptr<const Config> config) {
  auto rt = std::make_shared<Runtime>();
  try {
    rt->router = std::make_unique<Router>(config->routes);
  } catch (const std::exception& e) {
    log::error("cannot build the router", {{"error", e.what()}});
    return nullptr;
  }
  // TLS contexts are built per configuration; a listener keeps its ticket keys across
  // reloads so clients go on resuming their sessions.
  const Runtime* previous = runtime_.get();
  for (size_t i = 0; i < config->listeners.size(); ++i) {
    const ListenerConfig& l = config->listeners[i];
    if (!l.tls) {
      rt->listener_tls.push_back(nullptr);
      continue;
    }
    // The same listener (by name) in the configuration being replaced lends its keys.
    const TlsServerContext* before = nullptr;
    if (previous) {
      const auto& old = previous->config->listeners;
      for (size_t j = 0; j < old.size() && j < previous->listener_tls.size(); ++j) {
        if (old[j].name == l.name) before = previous->listener_tls[j].get();
      }
    }
    std::string error;
    TlsServerOptions options;
    options.http2 = l.http2;
    auto ctx = TlsServerContext::build(*l.tls, &error, before, options);
    if (!ctx) {
      log::error("cannot set up TLS", {{"listener", l.name}, {"error", error}});
      std::fprintf(stderr, "listener %s: %s\n", l.name.c_str(), error.c_str());
      return nullptr;
    }
    rt->listener_tls.push_back(std::move(ctx));
  }
  for (const UpstreamConfig& u : config->upstreams) {
    if (!u.tls) {
      rt->upstream_tls.push_back(nullptr);
      continue;
    }
    std::string error;
    auto ctx = TlsClientContext::build(*u.tls, &error);
    if (!ctx) {
      log::error("cannot set up upstream TLS", {{"upstream", u.name}, {"error", error}});
      std::fprintf(stderr, "upstream %s: %s\n", u.name.c_str(), error.c_str());
      return nullptr;
    }
    rt->upstream_tls.push_back(std::move(ctx));
  }
  rt->config = std::move(config);
  rt->generation = ++generation_;
  return rt;
}

void Server::countReload(bool ok) {
  (ok ? reloads_ok_ : reloads_failed_).fetch_add(1);
  last_reload_ = {wallClockMs(), ok};
  if (ok) loaded_at_ms_ = last_reload_.at_ms;
  metrics::process().add(metrics::Id::ConfigReloads, {reloadResultLabel(ok), 0, 0});
}

bool Server::bindAll(const Config& config) {
  worker_sockets_.assign(config.workers, {});
  auto cannotBind = [](const ListenerConfig& l, const std::string& error) {
    log::error("cannot bind listener", {{"listener", l.name}, {"address", l.address.text}, {"error", error}});
    std::fprintf(stderr, "cannot bind listener %s on %s: %s\n", l.name.c_str(),
                 l.address.text.c_str(), error.c_str());
    return false;
  };
  // Every listener is probed before any is bound: two listeners of this configuration may
  // overlap (0.0.0.0:8080 and [::]:8080), and only other processes' sockets must refuse.
  for (const ListenerConfig& l : config.listeners) {
    std::string error;
    if (!addressIsFree(reinterpret_cast<const sockaddr*>(&l.address.storage), l.address.length,
                       &error)) {
      return cannotBind(l, error);
    }
  }
  for (size_t li = 0; li < config.listeners.size(); ++li) {
    const ListenerConfig& l = config.listeners[li];
    std::vector<int> fds;
    std::string error, bound;
    if (!bindShared(l.address, config.workers, true, fds, &error, &bound)) return cannotBind(l, error);
    for (size_t w = 0; w < fds.size(); ++w) worker_sockets_[w].push_back({fds[w], li, false});
    log::info("listener bound", {{"listener", l.name}, {"address", bound}});
  }
  std::vector<int> fds;
  std::string error, bound;
  if (!bindShared(config.admin.address, 1, false, fds, &error, &bound)) {
    log::error("cannot bind admin listener", {{"address", config.admin.address.text}, {"error", error}});
    std::fprintf(stderr, "cannot bind admin listener on %s: %s\n", config.admin.address.text.c_str(),
                 error.c_str());
    return false;
  }
  admin_socket_ = {fds[0], SIZE_MAX, true};
  log::info("admin listener bound", {{"address", bound}});
  return true;
}

int Server::run() {
  start_ms_ = wallClockMs();
  signal(SIGPIPE, SIG_IGN);
  log::init(LogLevel::Info);
  LoadResult loaded = loadConfigFile(config_path_);
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors) std::fprintf(stderr, "%s\n", e.format().c_str());
    if (loaded.errors.empty()) std::fprintf(stderr, "%s: invalid configuration\n", config_path_.c_str());
    log::shutdown();
    return 1;
  }
  const Config& config = *loaded.config;
  log::setLevel(config.logging.level);
  std::string error;
  if (!log::openAccessLog(config.logging.access_log, &error)) {
    std::fprintf(stderr, "cannot open access log %s: %s\n", config.logging.access_log.c_str(), error.c_str());
    log::shutdown();
    return 1;
  }
  runtime_ = buildRuntime(loaded.config);
  loaded_at_ms_ = wallClockMs();
  if (!runtime_ || !bindAll(config)) {
    log::shutdown();
    return 1;
  }
  limiter_.setLimits(config.limits.max_connections, config.limits.max_connections_per_ip);
  declareConfiguredSeries(config);
  tracing::Exporter::configure(config.tracing);

  admin_ = std::make_unique<Worker>(*this, config.workers);
  admin_->init(runtime_, {admin_socket_});
  uv_loop_t* loop = admin_->loop();
  for (auto [sig, handle] : {std::pair{SIGHUP, &sighup_}, {SIGTERM, &sigterm_}, {SIGINT, &sigint_},
                             {SIGUSR1, &sigusr1_}}) {
    uv_signal_init(loop, handle);
    handle->data = this;
    uv_signal_start(handle, onSignal, sig);
  }
  uv_async_init(loop, &worker_exit_, onWorkerExit);
  worker_exit_.data = this;
  uv_timer_init(loop, &drain_timer_);
  drain_timer_.data = this;
  health_checker_ = std::make_unique<HealthChecker>(loop);
  health_checker_->configure(config);

  for (uint32_t i = 0; i < config.workers; ++i) workers_.push_back(std::make_unique<Worker>(*this, i));
  for (uint32_t i = 0; i < config.workers; ++i) workers_[i]->startThread(runtime_, worker_sockets_[i]);
  started_.store(true, std::memory_order_release);
  log::info("gateway started", {{"version", GATEWAY_VERSION},
                                 {"workers", std::to_string(config.workers)},
                                 {"config", config_path_}});
  admin_->run();
  for (auto& w : workers_) w->join();
  runShutdownHooks();
  log::info("gateway stopped");
  log::shutdown();
  return 0;
}

void Server::onSignal(uv_signal_t* h, int signum) {
  auto* s = static_cast<Server*>(h->data);
  if (signum == SIGHUP) {
    s->reload();
  } else if (signum == SIGUSR1) {
    std::string error;
    if (!log::accessLogEnabled()) {
      log::info("access log is off: nothing to reopen");
    } else if (log::reopenAccessLog(&error)) {
      log::info("access log reopened");
    } else {
      log::error("cannot reopen the access log; still writing to the old file", {{"error", error}});
    }
  } else if (s->draining()) {
    log::warn("second stop signal: closing all connections now");
    s->stopWorkers();
  } else {
    s->beginDrain();
  }
}

void Server::reload() {
  LoadResult loaded = loadConfigFile(config_path_);
  // Logged before counted: whoever sees the counter move can already read why.
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors) log::error("configuration reload refused", {{"error", e.format()}});
    countReload(false);
    return;
  }
  auto rt = buildRuntime(loaded.config);
  if (!rt) {
    countReload(false);
    return;
  }
  const Config& old = *runtime()->config;
  const Config& now = *rt->config;
  bool listeners_same = old.listeners.size() == now.listeners.size() && old.workers == now.workers &&
                        old.admin.address.text == now.admin.address.text;
  for (size_t i = 0; listeners_same && i < now.listeners.size(); ++i) {
    listeners_same = old.listeners[i].address.text == now.listeners[i].address.text;
  }
  if (!listeners_same) {
    log::warn("listener, admin or worker changes take effect at the next restart");
  }
  if (old.logging.access_log != now.logging.access_log) {
    std::string error;
    if (!log::openAccessLog(now.logging.access_log, &error)) {
      log::error("configuration reload refused", {{"error", "cannot open access log: " + error}});
      countReload(false);
      return;
    }
  }
  log::setLevel(now.logging.level);
  limiter_.setLimits(now.limits.max_connections, now.limits.max_connections_per_ip);
  {
    std::lock_guard<std::mutex> lock(runtime_mutex_);
    runtime_ = rt;
  }
  // Before the workers see it: the first spans of a configuration that turns tracing on
  // must find the exporter there.
  tracing::Exporter::configure(now.tracing);
  for (auto& w : workers_) w->postRuntime(rt);
  admin_->postRuntime(rt);
  health_checker_->configure(now);
  declareConfiguredSeries(now);
  countReload(true);
  log::info("configuration reloaded", {{"generation", std::to_string(rt->generation)}});
}

void Server::beginDrain() {
  draining_.store(true, std::memory_order_release);
  uint64_t drain_ms = uint64_t(runtime()->config->timeouts.drain.count());
  log::info("draining", {{"timeout_ms", std::to_string(drain_ms)}});
  for (auto& w : workers_) w->postDrain();
  uv_timer_start(&drain_timer_, onDrainTimeout, drain_ms, 0);
}

void Server::onDrainTimeout(uv_timer_t* h) {
  log::warn("drain timeout: closing the remaining connections");
  static_cast<Server*>(h->data)->stopWorkers();
}

void Server::stopWorkers() {
  for (auto& w : workers_) w->postStop();
}

void Server::workerExited() {
  workers_exited_.fetch_add(1);
  uv_async_send(&worker_exit_);
}

void Server::onWorkerExit(uv_async_t* h) {
  auto* s = static_cast<Server*>(h->data);
  if (s->workers_exited_.load() < s->workers_.size()) return;
  for (uv_handle_t* handle : {reinterpret_cast<uv_handle_t*>(&s->sighup_),
                              reinterpret_cast<uv_handle_t*>(&s->sigterm_),
                              reinterpret_cast<uv_handle_t*>(&s->sigint_),
                              reinterpret_cast<uv_handle_t*>(&s->sigusr1_),
                              reinterpret_cast<uv_handle_t*>(&s->worker_exit_),
                              reinterpret_cast<uv_handle_t*>(&s->drain_timer_)}) {
    uv_close(handle, nullptr);
  }
  s->health_checker_->stop();
  s->admin_->postStop();
}

}  // namespace gw
