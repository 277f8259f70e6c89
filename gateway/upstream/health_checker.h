// Active health checks of upstream endpoints (`upstreams[].health_check`): HTTP GETs, or
// grpc.health.v1.Health/Check calls over HTTP/2 (`type: grpc`), over TLS when the upstream
// has `tls` (as its connections are made), else plain TCP. They run on the main thread's
// loop: one probe per endpoint per interval, whatever the number of workers. Results go
// to the shared EndpointState (workers stop sending traffic to an unhealthy endpoint), to
// gateway_upstream_endpoint_healthy, and to /health.
#pragma once

#include <uv.h>

#include <memory>
#include <vector>

#include "gateway/config/config.h"
#include "gateway/upstream/endpoint_state.h"

namespace gw {

class HealthChecker {
 public:
  explicit HealthChecker(uv_loop_t* loop) : loop_(loop) {}
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // Replaces the probes with those of `config` (endpoint states carry over) and
  // publishes the /health entries of every upstream. Main thread.
  void configure(const Config& config);
  void stop();

 private:
  struct Probe;
  static void publish(const Config& config);

  uv_loop_t* loop_;
  std::vector<Probe*> probes_;  // each frees itself once stopped and its handles closed
};

}  // namespace gw
