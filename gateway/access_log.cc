#include "gateway/access_log.h"

#include <charconv>
#include <string>

#include "gateway/config/config.h"
#include "gateway/exchange.h"
#include "gateway/http_util.h"
#include "gateway/log.h"

namespace gw {

namespace {

void appendField(std::string& out, std::string_view key, std::string_view value) {
  out += ",\"";
  out += key;
  out += "\":\"";
  appendJsonEscaped(out, value);
  out += '"';
}

void appendRaw(std::string& out, std::string_view key, std::string_view raw) {
  out += ",\"";
  out += key;
  out += "\":";
  out += raw;
}

void appendUint(std::string& out, std::string_view key, uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  appendRaw(out, key, std::string_view(buf, size_t(r.ptr - buf)));
}

void appendMillis(std::string& out, std::string_view key, uint64_t ns) {
  // Three decimals: microsecond resolution is what a proxy's latency needs.
  char buf[32];
  uint64_t us = ns / 1000;
  auto r = std::to_chars(buf, buf + sizeof buf, us / 1000);
  char* p = r.ptr;
  *p++ = '.';
  uint64_t frac = us % 1000;
  *p++ = char('0' + frac / 100);
  *p++ = char('0' + frac / 10 % 10);
  *p++ = char('0' + frac % 10);
  appendRaw(out, key, std::string_view(buf, size_t(p - buf)));
}

}  // namespace

void writeAccessLog(Worker&, const Exchange& r) {
  for (const auto& f : r.ctx.route ? r.ctx.route->chain : std::vector<std::shared_ptr<const Filter>>{}) {
    f->onLog(r.ctx);
  }
  if (!log::accessLogEnabled()) return;
  thread_local std::string line;  // capacity reused: no allocation per request once warm
  line.clear();
  char ts[24];
  formatTimestamp(r.ctx.now_ms, ts);
  line += "{\"timestamp\":\"";
  line.append(ts, 24);
  line += '"';
  appendField(line, "request_id", r.ctx.request_id);
  appendField(line, "client_ip", r.ctx.client_ip.empty() ? r.ctx.peer_ip : r.ctx.client_ip);
  appendField(line, "method", r.ctx.method);
  appendField(line, "protocol", r.protocol());
  appendField(line, "path", r.ctx.path);
  appendField(line, "route", r.ctx.route ? std::string_view(r.ctx.route->name) : std::string_view());
  appendUint(line, "status", uint64_t(r.status));
  appendMillis(line, "duration_ms", monotonicNs() - r.start_ns);
  appendField(line, "upstream", r.upstream_name);
  appendField(line, "upstream_endpoint", r.upstream_endpoint);
  if (r.upstream_start_ns && r.upstream_end_ns > r.upstream_start_ns) {
    appendMillis(line, "upstream_duration_ms", r.upstream_end_ns - r.upstream_start_ns);
  } else {
    appendRaw(line, "upstream_duration_ms", "null");
  }
  appendUint(line, "bytes_in", r.bytes_in);
  appendUint(line, "bytes_out", r.bytes_out);
  appendRaw(line, "tls", r.ctx.tls ? "true" : "false");
  appendField(line, "user", r.ctx.user);
  if (!r.error_code.empty()) appendField(line, "error_code", r.error_code);
  if (r.grpc) {
    if (r.grpc_status.empty()) {
      appendRaw(line, "grpc_status", "null");  // the call ended without one (cut short)
    } else {
      appendField(line, "grpc_status", r.grpc_status);
    }
  }
  if (r.trace.active) {
    appendField(line, "trace_id", r.trace.traceIdHex());
    appendField(line, "span_id", r.trace.spanIdHex());
  }
  line += '}';
  log::writeAccessLine(line);
}

}  // namespace gw
