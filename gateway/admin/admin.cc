#include "gateway/admin/admin.h"

#include <nlohmann/json.hpp>

#include "gateway/upstream/endpoint_state.h"
#include "gateway/admin/health.h"
#include "gateway/http_util.h"
#include "gateway/metrics.h"
#include "gateway/server.h"
#include "gateway/admin/status.h"
#include "gateway/admin/status_page.h"

namespace gw {

namespace {

AdminResponse json(int status, std::string body) {
  AdminResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

AdminResponse error(int status, std::string_view message, std::string_view request_id) {
  return json(status, errorBody(errorCodeFor(status), message, request_id, wallClockMs()));
}

AdminResponse fullHealth(Server& server) {
  health::Report report = health::collect();
  if (server.draining() && report.status == health::Status::Healthy) {
    report.status = health::Status::Degraded;
  }
  nlohmann::json body = {
      {"status", health::statusName(report.status)},
      {"version", GATEWAY_VERSION},
      {"uptime_seconds", (wallClockMs() - server.startTimeMs()) / 1000},
      {"checks", report.checks},
  };
  return json(report.status == health::Status::Unhealthy ? 503 : 200, body.dump());
}

}  // namespace

AdminResponse handleAdmin(Server& server, std::string_view method, std::string_view path,
                          std::string_view request_id) {
  if (method != "GET" && method != "HEAD") {
    return error(400, "Admin endpoints answer GET only", request_id);
  }
  if (path == "/health/live") return json(200, R"({"status":"alive"})");
  if (path == "/health/startup") {
    return server.started() ? json(200, R"({"status":"started"})")
                            : json(503, R"({"status":"starting"})");
  }
  if (path == "/health/ready") {
    if (server.draining()) return json(503, R"({"status":"draining"})");
    if (!server.started()) return json(503, R"({"status":"starting"})");
    if (!health::collect().ready) return json(503, R"({"status":"not_ready"})");
    return json(200, R"({"status":"ready"})");
  }
  if (path == "/" || path == "/index.html") {
    AdminResponse r;
    r.content_type = "text/html; charset=utf-8";
    r.body = std::string(statusPageHtml());
    r.headers = {{"Content-Security-Policy", statusPageCsp()},
                 {"X-Content-Type-Options", "nosniff"},
                 {"Referrer-Policy", "no-referrer"},
                 {"Cache-Control", "no-store"}};
    return r;
  }
  if (path == "/health") return fullHealth(server);
  if (path == "/status") {
    std::shared_ptr<const Runtime> rt = server.runtime();
    StatusInput in;
    in.config = rt->config.get();
    in.now_ms = wallClockMs();
    in.start_ms = server.startTimeMs();
    in.loaded_at_ms = server.loadedAtMs();
    in.last_reload = server.lastReload();
    in.now_ns = uint64_t(monotonicMs()) * 1000000;  // the clock the workers record with
    AdminResponse r = json(200, statusJson(in).dump());
    r.headers = {{"Cache-Control", "no-store"}};
    return r;
  }
  if (path == "/metrics") {
    AdminResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics::renderPrometheus(GATEWAY_VERSION, server.startTimeMs());
    return r;
  }
  return error(404, "No such admin endpoint", request_id);
}

}  // namespace gw
