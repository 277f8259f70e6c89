#include "gateway/metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <unordered_map>

namespace gw::metrics {

namespace {

constexpr size_t kCellsPerChunk = 64;

const Definition kDefinitions[] = {
    {"gateway_requests_total", "Requests answered, by route, method, status code and protocol.",
     Type::Counter, {"route", "method", "code", "protocol"}},
    {"gateway_request_duration_seconds", "Time from the first byte of a request to its last response byte.",
     Type::Histogram, {"route"}},
    {"gateway_requests_in_flight", "Requests being processed.", Type::Gauge, {}},
    {"gateway_upstream_requests_total", "Responses received from upstreams, by status code.",
     Type::Counter, {"upstream", "code"}},
    {"gateway_upstream_request_duration_seconds", "Time from sending a request upstream to its response head.",
     Type::Histogram, {"upstream"}},
    {"gateway_upstream_connect_failures_total", "Failed connection attempts to upstream endpoints.",
     Type::Counter, {"upstream"}},
    {"gateway_upstream_endpoint_healthy", "1 when the endpoint passes its health checks.", Type::Gauge,
     {"upstream", "endpoint"}},
    {"gateway_upstream_endpoint_in_flight", "Requests sent to the endpoint and not yet answered.",
     Type::Gauge, {"upstream", "endpoint"}},
    {"gateway_circuit_breaker_open", "Upstream endpoints whose circuit breaker is open.", Type::Gauge,
     {"upstream"}},
    {"gateway_rate_limited_total", "Requests refused by a rate limit.", Type::Counter, {"route"}},
    {"gateway_auth_failures_total", "Requests refused by authentication or authorisation.",
     Type::Counter, {"route", "reason"}},
    {"gateway_cors_preflights_total", "CORS preflight requests answered by the gateway.", Type::Counter,
     {"route"}},
    {"gateway_request_rejected_total", "Requests the gateway refused itself, by reason.", Type::Counter,
     {"route", "reason"}},
    {"gateway_upstream_bad_responses_total",
     "Upstream responses not forwarded whole: head_too_large, malformed, truncated.", Type::Counter,
     {"upstream", "reason"}},
    {"gateway_connections_active", "Open client connections.", Type::Gauge, {"listener"}},
    {"gateway_connections_total", "Accepted client connections.", Type::Counter, {"listener"}},
    {"gateway_connections_rejected_total", "Client connections refused at accept, by reason.",
     Type::Counter, {"listener", "reason"}},
    {"gateway_tls_handshakes_total", "Completed TLS handshakes.", Type::Counter, {"listener"}},
    {"gateway_tls_handshake_errors_total", "Failed TLS handshakes.", Type::Counter, {"listener"}},
    {"gateway_config_reloads_total", "Configuration reloads, by result.", Type::Counter, {"result"}},
    {"gateway_redis_errors_total", "Failed or timed-out Redis calls, by reason.", Type::Counter,
     {"reason"}},
    {"gateway_tracing_spans_dropped_total",
     "Sampled spans not exported: queue_full (the export queue was full), export_failed.",
     Type::Counter, {"reason"}},
    {"gateway_tracing_spans_exported_total", "Spans the collector accepted.", Type::Counter, {}},
    {"gateway_tracing_export_requests_total",
     "OTLP export requests, by result: success, retry (to be sent again), failure (batch dropped).",
     Type::Counter, {"result"}},
    {"gateway_build_info", "Build information.", Type::Gauge, {"version"}},
    {"gateway_http2_protocol_errors_total",
     "HTTP/2 connections ended by a defence or a protocol error, by reason.", Type::Counter,
     {"listener", "reason"}},
    {"gateway_grpc_responses_total",
     "Responses to gRPC requests, by route and grpc-status (the upstream's, or the gateway's own).",
     Type::Counter, {"route", "grpc_status"}},
};
static_assert(sizeof kDefinitions / sizeof kDefinitions[0] == size_t(Id::kCount));

struct LabelRegistry {
  std::mutex mutex;
  std::unordered_map<std::string, uint16_t> ids;
  std::vector<std::string> texts{""};  // id 0: no label
  uint16_t status[600] = {};
  std::map<std::string, uint16_t, std::less<>> methods;
  std::map<std::string, uint16_t, std::less<>> protocols;
  uint16_t get = 0, post = 0;
  uint16_t grpc_status[17] = {};  // "0".."16"
  uint16_t grpc_other = 0, grpc_none = 0;

  uint16_t intern(std::string_view v) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = ids.find(std::string(v));
    if (it != ids.end()) return it->second;
    if (texts.size() >= 65535) return 0;  // cannot happen with configuration-bound values
    uint16_t id = uint16_t(texts.size());
    texts.emplace_back(v);
    ids.emplace(std::string(v), id);
    return id;
  }

  LabelRegistry() {
    for (int s = 100; s < 600; ++s) status[s] = intern(std::to_string(s));
    for (const char* m : {"DELETE", "GET", "HEAD", "POST", "PUT", "CONNECT", "OPTIONS", "TRACE",
                          "PATCH", "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK",
                          "UNLOCK", "SEARCH", "PURGE", "REPORT", "MKACTIVITY", "CHECKOUT",
                          "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "LINK",
                          "UNLINK", "SOURCE", "QUERY", "ACL", "BIND", "REBIND", "UNBIND",
                          "MKCALENDAR"}) {
      methods.emplace(m, intern(m));
    }
    methods.emplace("other", intern("other"));
    for (const char* p : {"HTTP/1.0", "HTTP/1.1", "HTTP/2"}) protocols.emplace(p, intern(p));
    get = methods.find("GET")->second;
    post = methods.find("POST")->second;
    for (int g = 0; g <= 16; ++g) grpc_status[g] = intern(std::to_string(g));
    grpc_other = intern("other");
    grpc_none = intern("none");
  }
};

LabelRegistry& labels() {
  static LabelRegistry* r = new LabelRegistry();  // lives until exit, used by every thread
  return *r;
}

struct StoreRegistry {
  std::mutex mutex;
  std::vector<MetricStore*> stores;
};

StoreRegistry& stores() {
  static StoreRegistry* r = new StoreRegistry();
  return *r;
}

thread_local MetricStore* t_store = nullptr;

uint64_t keyOf(Labels l) {
  return uint64_t(l[0]) << 48 | uint64_t(l[1]) << 32 | uint64_t(l[2]) << 16 | l[3];
}

uint64_t mix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  return k;
}

size_t slotOf(Id id, uint64_t key, size_t mask) {
  return size_t(mix(key ^ uint64_t(id) * 0x9e3779b97f4a7c15ull)) & mask;
}

void appendEscaped(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

void appendLabels(std::string& out, const Definition& d, const Labels& l,
                  std::string_view extra_name = {}, std::string_view extra_value = {}) {
  bool any = false;
  for (size_t i = 0; i < d.labels.size(); ++i) {
    if (d.labels[i].empty()) break;
    out += any ? ',' : '{';
    any = true;
    out += d.labels[i];
    out += "=\"";
    appendEscaped(out, labelText(l[i]));
    out += '"';
  }
  if (!extra_name.empty()) {
    out += any ? ',' : '{';
    any = true;
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  if (any) out += '}';
}

void appendNumber(std::string& out, double v) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, size_t(r.ptr - buf));
}

void appendInt(std::string& out, int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, size_t(r.ptr - buf));
}

struct Summed {
  int64_t value = 0;
  uint64_t sum_ns = 0;
  uint64_t buckets[kBuckets.size()] = {};
};

void appendProcessMetrics(std::string& out, uint64_t start_time_ms) {
  long page = sysconf(_SC_PAGESIZE);
  long ticks = sysconf(_SC_CLK_TCK);
  unsigned long long vsize = 0, rss_pages = 0;
  unsigned long utime = 0, stime = 0;
  if (FILE* f = std::fopen("/proc/self/stat", "r")) {
    char buf[1024];
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = 0;
    // Fields after the command name (which may hold spaces) start past the last ')'.
    if (char* p = std::strrchr(buf, ')')) {
      std::sscanf(p + 2,
                  "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d "
                  "%*u %llu %llu",
                  &utime, &stime, &vsize, &rss_pages);
    }
  }
  size_t fds = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) fds += e->d_name[0] != '.';
    closedir(d);
    if (fds > 0) --fds;  // the directory stream itself
  }
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  auto metric = [&](std::string_view name, std::string_view type, std::string_view help, double v) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
    out += name;
    out += ' ';
    appendNumber(out, v);
    out += '\n';
  };
  metric("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
         double(utime + stime) / double(ticks));
  metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
         double(rss_pages) * double(page));
  metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", double(vsize));
  metric("process_open_fds", "gauge", "Number of open file descriptors.", double(fds));
  metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", double(rl.rlim_cur));
  metric("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
         double(start_time_ms) / 1000.0);
}

}  // namespace

const Definition& definition(Id id) { return kDefinitions[size_t(id)]; }

uint16_t labelId(std::string_view value) { return labels().intern(value); }

std::string labelText(uint16_t id) {
  auto& r = labels();
  std::lock_guard<std::mutex> lock(r.mutex);
  return id < r.texts.size() ? r.texts[id] : std::string();
}

uint16_t statusLabel(int status) {
  return status >= 100 && status < 600 ? labels().status[status] : labels().status[599];
}

uint16_t methodLabel(std::string_view m) {
  auto& r = labels();
  // The common methods without the map's string comparisons (once per request).
  if (m == "GET") return r.get;
  if (m == "POST") return r.post;
  auto it = r.methods.find(m);
  return it != r.methods.end() ? it->second : r.methods.find("other")->second;
}

uint16_t grpcStatusLabel(std::string_view s) {
  // An upstream's grpc-status is its text: only the 17 codes gRPC defines become labels.
  auto& r = labels();
  if (s.empty()) return r.grpc_none;
  int v = 0;
  if (s.size() > 2 || s[0] < '0' || s[0] > '9' || (s.size() == 2 && (s[0] == '0' || s[1] < '0' || s[1] > '9'))) {
    return r.grpc_other;
  }
  for (char c : s) v = v * 10 + (c - '0');
  return v <= 16 ? r.grpc_status[v] : r.grpc_other;
}

uint16_t protocolLabel(std::string_view p) {
  const auto& protocols = labels().protocols;
  auto it = protocols.find(p);
  return it != protocols.end() ? it->second : 0;
}

MetricStore::MetricStore(bool shared) : shared_(shared), entries_(64) {}

MetricStore::~MetricStore() = default;

Cell& MetricStore::cell(Id id, Labels labels) {
  uint64_t key = keyOf(labels);
  Recent& recent = recent_[size_t(id)];
  if (recent.cell && recent.key == key) return *recent.cell;
  size_t mask = entries_.size() - 1;
  for (size_t i = slotOf(id, key, mask);; i = (i + 1) & mask) {
    Entry& e = entries_[i];
    if (!e.cell) break;
    if (e.key == key && e.id == id) {
      recent = {key, e.cell};
      return *e.cell;
    }
  }
  // A new series: rare (bounded by configuration), so the lock is taken only here on a
  // worker's own store; scrapes take it to read a consistent table.
  std::lock_guard<std::mutex> lock(mutex_);
  if ((used_ + 1) * 2 > entries_.size()) grow();
  if (chunks_.empty() || chunk_used_ == kCellsPerChunk) {
    chunks_.push_back(std::make_unique<Cell[]>(kCellsPerChunk));
    chunk_used_ = 0;
  }
  Cell* c = &chunks_.back()[chunk_used_++];
  mask = entries_.size() - 1;
  size_t i = slotOf(id, key, mask);
  while (entries_[i].cell) i = (i + 1) & mask;
  entries_[i] = {key, id, labels, c};
  ++used_;
  recent = {key, c};
  return *c;
}

void MetricStore::grow() {
  std::vector<Entry> old(entries_.size() * 2);
  old.swap(entries_);
  size_t mask = entries_.size() - 1;
  for (const Entry& e : old) {
    if (!e.cell) continue;
    size_t i = slotOf(e.id, e.key, mask);
    while (entries_[i].cell) i = (i + 1) & mask;
    entries_[i] = e;
  }
}

void MetricStore::add(Id id, Labels labels, int64_t n) {
  if (shared_) {
    std::lock_guard<std::mutex> lock(write_mutex_);
    Cell& c = cell(id, labels);
    c.value.fetch_add(n, std::memory_order_relaxed);
    return;
  }
  Cell& c = cell(id, labels);
  c.value.store(c.value.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

void MetricStore::set(Id id, Labels labels, int64_t v) {
  if (shared_) {
    std::lock_guard<std::mutex> lock(write_mutex_);
    cell(id, labels).value.store(v, std::memory_order_relaxed);
    return;
  }
  cell(id, labels).value.store(v, std::memory_order_relaxed);
}

void MetricStore::observe(Id id, Labels labels, uint64_t duration_ns) {
  std::unique_lock<std::mutex> lock;
  if (shared_) lock = std::unique_lock<std::mutex>(write_mutex_);
  Cell& c = cell(id, labels);
  double seconds = double(duration_ns) / 1e9;
  size_t b = 0;
  while (b < kBuckets.size() && seconds > kBuckets[b]) ++b;
  // Buckets hold per-bucket counts; the scrape makes them cumulative.
  if (b < kBuckets.size()) {
    c.buckets[b].store(c.buckets[b].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  c.sum_ns.store(c.sum_ns.load(std::memory_order_relaxed) + duration_ns, std::memory_order_relaxed);
  c.value.store(c.value.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

MetricStore& process() {
  static MetricStore* store = [] {
    auto* s = new MetricStore(true);
    registerStore(s);
    return s;
  }();
  return *store;
}

MetricStore& local() { return t_store ? *t_store : process(); }

void bindThread(MetricStore* store) { t_store = store; }

void registerStore(MetricStore* store) {
  std::lock_guard<std::mutex> lock(stores().mutex);
  stores().stores.push_back(store);
}

void unregisterStore(MetricStore* store) {
  std::lock_guard<std::mutex> lock(stores().mutex);
  auto& v = stores().stores;
  v.erase(std::remove(v.begin(), v.end(), store), v.end());
}

void forEachStore(const std::function<void(const MetricStore&)>& f) {
  std::lock_guard<std::mutex> lock(stores().mutex);
  for (const MetricStore* s : stores().stores) f(*s);
}

int64_t total(Id id, Labels labels) {
  int64_t sum = 0;
  forEachStore([&](const MetricStore& s) {
    s.forEach([&](Id i, const Labels& l, const Cell& c) {
      if (i == id && l == labels) sum += c.value.load(std::memory_order_relaxed);
    });
  });
  return sum;
}

std::string renderPrometheus(std::string_view version, uint64_t start_time_ms) {
  process().set(Id::BuildInfo, {labelId(version), 0, 0}, 1);
  // Sum every store per series; a worker that exited took its counts with it, which is
  // acceptable for a process that is stopping.
  std::map<std::pair<uint8_t, Labels>, Summed> series;
  forEachStore([&](const MetricStore& s) {
    s.forEach([&](Id id, const Labels& l, const Cell& c) {
      Summed& sum = series[{uint8_t(id), l}];
      sum.value += c.value.load(std::memory_order_relaxed);
      sum.sum_ns += c.sum_ns.load(std::memory_order_relaxed);
      for (size_t b = 0; b < kBuckets.size(); ++b) sum.buckets[b] += c.buckets[b].load(std::memory_order_relaxed);
    });
  });
  std::string out;
  out.reserve(16384);
  for (size_t i = 0; i < size_t(Id::kCount); ++i) {
    const Definition& d = kDefinitions[i];
    out += "# HELP ";
    out += d.name;
    out += ' ';
    out += d.help;
    out += "\n# TYPE ";
    out += d.name;
    out += d.type == Type::Counter ? " counter\n" : d.type == Type::Gauge ? " gauge\n" : " histogram\n";
    bool unlabelled_seen = false;
    for (auto it = series.lower_bound({uint8_t(i), Labels{}});
         it != series.end() && it->first.first == i; ++it) {
      const Labels& l = it->first.second;
      const Summed& s = it->second;
      if (d.labels[0].empty()) unlabelled_seen = true;
      if (d.type != Type::Histogram) {
        out += d.name;
        appendLabels(out, d, l);
        out += ' ';
        appendInt(out, s.value);
        out += '\n';
        continue;
      }
      uint64_t cumulative = 0;
      for (size_t b = 0; b < kBuckets.size(); ++b) {
        cumulative += s.buckets[b];
        char le[32];
        // Plain decimals ("0.00025", not "2.5e-04"), as Prometheus' own clients write them.
        auto r = std::to_chars(le, le + sizeof le, kBuckets[b], std::chars_format::fixed);
        out += d.name;
        out += "_bucket";
        appendLabels(out, d, l, "le", std::string_view(le, size_t(r.ptr - le)));
        out += ' ';
        appendInt(out, int64_t(cumulative));
        out += '\n';
      }
      out += d.name;
      out += "_bucket";
      appendLabels(out, d, l, "le", "+Inf");
      out += ' ';
      appendInt(out, s.value);
      out += '\n';
      out += d.name;
      out += "_sum";
      appendLabels(out, d, l);
      out += ' ';
      appendNumber(out, double(s.sum_ns) / 1e9);
      out += '\n';
      out += d.name;
      out += "_count";
      appendLabels(out, d, l);
      out += ' ';
      appendInt(out, s.value);
      out += '\n';
    }
    // Unlabelled counters and gauges always show, even before the first event.
    if (d.labels[0].empty() && !unlabelled_seen && d.type != Type::Histogram) {
      out += d.name;
      out += " 0\n";
    }
  }
  appendProcessMetrics(out, start_time_ms);
  return out;
}

}  // namespace gw::metrics
