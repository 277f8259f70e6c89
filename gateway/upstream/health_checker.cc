#include "gateway/upstream/health_checker.h"

#include <cstring>
#include <string>
#include <utility>

#include "gateway/admin/health.h"
#include "gateway/http_util.h"
#include "gateway/log.h"
#include "gateway/metrics.h"

namespace gw {

struct HealthChecker::Probe {
  uv_loop_t* loop;
  HealthCheckConfig check;
  std::shared_ptr<EndpointState> state;
  SocketAddress address;
  uint16_t upstream_label = 0;
  uint16_t endpoint_label = 0;
  std::string request;

  uv_timer_t interval{};
  uv_timer_t deadline{};
  uv_tcp_t* tcp = nullptr;  // per attempt; freed in its close callback
  uv_connect_t connect_req{};
  uv_write_t write_req{};
  char response[64];
  size_t response_len = 0;
  int64_t started_us = 0;
  bool stopping = false;
  int open_handles = 2;

  Probe(uv_loop_t* l, const HealthCheckConfig& c, std::shared_ptr<EndpointState> s,
        const SocketAddress& a, uint16_t upstream, uint16_t endpoint)
      : loop(l), check(c), state(std::move(s)), address(a), upstream_label(upstream),
        endpoint_label(endpoint) {}

  static int64_t nowUs() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
  }

  void start() {
    uv_timer_init(loop, &interval);
    uv_timer_init(loop, &deadline);
    interval.data = deadline.data = this;
    request = "GET " + check.path + " HTTP/1.1\r\nHost: " + address.text +
              "\r\nUser-Agent: gateway-health-check\r\nConnection: close\r\n\r\n";
    // The first check runs at once, so a dead endpoint is known within one timeout.
    uv_timer_start(&interval, [](uv_timer_t* t) { static_cast<Probe*>(t->data)->attempt(); }, 0,
                   uint64_t(check.interval.count()));
  }

  void attempt() {
    if (tcp || stopping) return;  // the previous check has not finished
    tcp = new uv_tcp_t;
    uv_tcp_init(loop, tcp);
    tcp->data = this;
    connect_req.data = this;
    response_len = 0;
    started_us = nowUs();
    uv_timer_start(&deadline, [](uv_timer_t* t) { static_cast<Probe*>(t->data)->finish(false); },
                   uint64_t(check.timeout.count()), 0);
    if (uv_tcp_connect(&connect_req, tcp, address.sa(), [](uv_connect_t* req, int status) {
          auto* p = static_cast<Probe*>(req->data);
          // A connect cancelled by a timed-out attempt's close is old news.
          if (reinterpret_cast<uv_tcp_t*>(req->handle) != p->tcp) return;
          if (status != 0) return p->finish(false);
          p->onConnected();
        }) != 0) {
      finish(false);
    }
  }

  void onConnected() {
    if (!tcp) return;
    uv_buf_t buf = uv_buf_init(request.data(), unsigned(request.size()));
    write_req.data = this;
    uv_write(&write_req, reinterpret_cast<uv_stream_t*>(tcp), &buf, 1, [](uv_write_t*, int) {});
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(tcp),
        [](uv_handle_t* h, size_t, uv_buf_t* b) {
          auto* p = static_cast<Probe*>(h->data);
          b->base = p->response + p->response_len;
          b->len = sizeof p->response - p->response_len;
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t*) {
          auto* p = static_cast<Probe*>(s->data);
          if (n < 0) return p->finish(p->statusOk());
          p->response_len += size_t(n);
          // The status line is all we need: "HTTP/1.1 200".
          if (p->response_len >= 12 || p->response_len == sizeof p->response) p->finish(p->statusOk());
        });
  }

  bool statusOk() const {
    if (response_len < 12 || std::memcmp(response, "HTTP/1.", 7) != 0) return false;
    int status = (response[9] - '0') * 100 + (response[10] - '0') * 10 + (response[11] - '0');
    return status >= 200 && status < 400;
  }

  void finish(bool ok) {
    uv_timer_stop(&deadline);
    if (tcp) {
      uv_close(reinterpret_cast<uv_handle_t*>(tcp), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
      tcp = nullptr;
    } else {
      return;  // already finished (timeout and failure racing)
    }
    if (stopping) return;
    state->last_checked_ms.store(int64_t(wallClockMs()), std::memory_order_relaxed);
    state->last_latency_us.store(ok ? nowUs() - started_us : -1, std::memory_order_relaxed);
    if (ok) {
      state->check_failures.store(0, std::memory_order_relaxed);
      uint32_t n = state->check_successes.fetch_add(1) + 1;
      if (!state->healthy.load() && n >= check.healthy_threshold) {
        state->healthy.store(true);
        log::info("upstream endpoint healthy", {{"upstream", state->upstream}, {"endpoint", state->address}});
      }
    } else {
      state->check_successes.store(0, std::memory_order_relaxed);
      uint32_t n = state->check_failures.fetch_add(1) + 1;
      if (state->healthy.load() && n >= check.unhealthy_threshold) {
        state->healthy.store(false);
        log::warn("upstream endpoint unhealthy", {{"upstream", state->upstream}, {"endpoint", state->address}});
      }
    }
    metrics::process().set(metrics::Id::UpstreamEndpointHealthy, {upstream_label, endpoint_label, 0},
                           state->healthy.load() ? 1 : 0);
  }

  void stop() {
    stopping = true;
    if (tcp) {
      uv_close(reinterpret_cast<uv_handle_t*>(tcp), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
      tcp = nullptr;
    }
    auto closed = [](uv_handle_t* h) {
      auto* p = static_cast<Probe*>(h->data);
      if (--p->open_handles == 0) delete p;
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&interval), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&deadline), closed);
  }
};

HealthChecker::~HealthChecker() { stop(); }

void HealthChecker::stop() {
  for (Probe* p : probes_) p->stop();
  probes_.clear();
}

void HealthChecker::configure(const Config& config) {
  stop();
  for (const UpstreamConfig& u : config.upstreams) {
    auto state = upstreamState(u);
    for (size_t i = 0; i < u.endpoints.size(); ++i) {
      uint16_t endpoint_label = metrics::labelId(u.endpoints[i].text);
      if (!u.health_check) {
        // Without checks an endpoint is taken as healthy (failures still open breakers).
        state->endpoints[i]->healthy.store(true);
        metrics::process().set(metrics::Id::UpstreamEndpointHealthy,
                               {u.metrics_label, endpoint_label, 0}, 1);
        continue;
      }
      auto* p = new Probe(loop_, *u.health_check, state->endpoints[i], u.endpoints[i],
                          u.metrics_label, endpoint_label);
      p->start();
      probes_.push_back(p);
    }
  }
  publish(config);
}

void HealthChecker::publish(const Config& config) {
  health::removeChecks("upstream:");
  for (const UpstreamConfig& u : config.upstreams) {
    auto state = upstreamState(u);
    // Without health_check an endpoint counts as healthy until its breaker opens, and says
    // so; its null last_checked tells that nothing probed it.
    health::setCheck("upstream:" + u.name, [state] {
      health::Check c;
      nlohmann::json endpoints = nlohmann::json::array();
      size_t up = 0;
      int64_t now = monotonicMs();
      for (const auto& e : state->endpoints) {
        bool healthy = e->healthy.load() && !e->breakerOpen(now);
        up += healthy;
        int64_t checked_ms = e->last_checked_ms.load();
        int64_t latency_us = e->last_latency_us.load();
        nlohmann::json entry = {{"address", e->address},
                                {"status", healthy ? "healthy" : "unhealthy"},
                                {"latency_ms", nullptr},
                                {"last_checked", nullptr}};
        if (latency_us >= 0 && checked_ms > 0) entry["latency_ms"] = double(latency_us) / 1000.0;
        if (checked_ms > 0) {
          char ts[24];
          formatTimestamp(uint64_t(checked_ms), ts);
          entry["last_checked"] = std::string(ts, 24);
        }
        if (e->breakerOpen(now)) entry["circuit_breaker"] = "open";
        endpoints.push_back(std::move(entry));
      }
      c.detail["endpoints"] = std::move(endpoints);
      c.ready = up > 0;
      c.status = up == state->endpoints.size() ? health::Status::Healthy
                 : up > 0                      ? health::Status::Degraded
                                               : health::Status::Unhealthy;
      return c;
    });
  }
}

}  // namespace gw
