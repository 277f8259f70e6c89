#include "gateway/tracing/exporter.h"

#include <openssl/crypto.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <random>
#include <thread>

#include "filters/jwt/http_fetch.h"  // the gateway's HTTP client (JWKS fetches use it too)
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/shutdown.h"
#include "gateway/tracing/otlp.h"
#include "gateway/tracing/span_queue.h"

namespace gw::tracing {
namespace {

constexpr uint32_t kMaxAttempts = 5;
constexpr uint64_t kFirstBackoffMs = 500;
constexpr uint64_t kMaxBackoffMs = 30000;
constexpr size_t kMaxResponseBytes = 64 * 1024;
// A batch body's buffer is reused from one batch to the next unless a burst of large
// spans made it this big.
constexpr size_t kKeptBodyCapacity = 4 * 1024 * 1024;

uint16_t label(std::string_view text) { return metrics::labelId(text); }

struct Labels {
  uint16_t queue_full = label("queue_full");
  uint16_t export_failed = label("export_failed");
  uint16_t success = label("success");
  uint16_t retry = label("retry");
  uint16_t failure = label("failure");
};
const Labels& labels() {
  static const Labels l;
  return l;
}

bool retryable(const jwt::HttpResult& r) {
  return r.status == 0 || r.status == 429 || r.status == 502 || r.status == 503 || r.status == 504;
}

class Thread {
 public:
  explicit Thread(size_t queue) : queue_(queue), rng_(std::random_device{}()) {
    uv_loop_init(&loop_);
    // Not a uv_async_t: its receiving side spins (pause, then sched_yield) until the
    // sender's uv_async_send() has returned, and a worker woken out of that call on the
    // exporter's CPU (the same CPU when the process is pinned to one) keeps it spinning
    // for a slice. A plain eventfd has no such handshake.
    wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    uv_poll_init(&loop_, &wake_, wake_fd_);
    wake_.data = this;
    uv_poll_start(&wake_, UV_READABLE, onWake);
    uv_timer_init(&loop_, &tick_);
    tick_.data = this;
    uv_timer_init(&loop_, &retry_);
    retry_.data = this;
    thread_ = std::thread([this] {
      uv_run(&loop_, UV_RUN_DEFAULT);
      OPENSSL_thread_stop();
    });
  }

  void configure(std::shared_ptr<const TracingConfig> config) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    pending_config_ = std::move(config);
    signal();
  }

  void submit(std::string& span) {
    size_t waiting = queue_.push(span);
    if (waiting == 0) {
      metrics::local().add(metrics::Id::TracingSpansDropped, {labels().queue_full, 0, 0});
      return;
    }
    // A full batch goes at once rather than at the next tick. Once: while an export is in
    // flight the queue grows past the mark, and the exporter looks again when it is done
    // (a wake per span then would be a syscall per request).
    if (waiting == batch_size_.load(std::memory_order_relaxed)) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!stopping_) signal();
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return;
      stopping_ = true;
      signal();
    }
    thread_.join();
    uv_loop_close(&loop_);
    close(wake_fd_);
  }

 private:
  // Under mutex_, so that no worker writes to the eventfd once stop() has begun.
  void signal() {
    uint64_t one = 1;
    ssize_t n = write(wake_fd_, &one, sizeof one);
    (void)n;  // EAGAIN: the counter is full, the exporter is woken anyway
  }

  static void onWake(uv_poll_t* h, int, int) noexcept {
    auto* self = static_cast<Thread*>(h->data);
    uint64_t count;
    ssize_t n = read(self->wake_fd_, &count, sizeof count);
    (void)n;
    self->wake();
  }
  static void onTick(uv_timer_t* t) noexcept { static_cast<Thread*>(t->data)->pump(true); }
  static void onRetry(uv_timer_t* t) noexcept {
    auto* self = static_cast<Thread*>(t->data);
    self->retrying_ = false;
    self->transmit();
  }

  void wake() {
    std::shared_ptr<const TracingConfig> config;
    bool stopping;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      config = std::move(pending_config_);
      stopping = stopping_;
    }
    if (config) apply(std::move(config));
    if (stopping) {
      beginFinalFlush();
      return;
    }
    pump(false);
  }

  // At exit, what is queued goes out as OpenTelemetry SDKs do on shutdown: batch after
  // batch, no retries, all within one otlp.timeout, so that a graceful stop keeps the
  // spans of its last seconds and a dead collector delays the exit by that much at most.
  void beginFinalFlush() {
    if (flushing_) return;
    flushing_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&wake_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
    if (!config_) {
      endFinalFlush();
      return;
    }
    bool resend = retrying_;
    retrying_ = false;
    uv_timer_start(&retry_, onFlushDeadline, uint64_t(config_->timeout.count()), 0);
    if (resend) {
      transmit();
    } else if (!inflight_) {
      pump(true);
      if (!inflight_) endFinalFlush();
    }
  }

  static void onFlushDeadline(uv_timer_t* t) noexcept {
    static_cast<Thread*>(t->data)->endFinalFlush();
  }

  void endFinalFlush() {
    if (inflight_) jwt::cancelHttpRequest(connection_);
    inflight_ = false;
    jwt::closeHttpConnection(connection_);
    connection_ = nullptr;
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&retry_))) {
      uv_close(reinterpret_cast<uv_handle_t*>(&retry_), nullptr);
    }
  }

  void apply(std::shared_ptr<const TracingConfig> config) {
    std::string why;
    auto url = jwt::parseHttpUrl(config->endpoint, &why);
    if (!url) return;  // the loader checked it
    url_ = std::move(*url);
    headers_ = config->headers;
    headers_.emplace_back("Content-Type", "application/x-protobuf");
    if (size_t dropped = queue_.resize(config->queue)) {
      metrics::process().add(metrics::Id::TracingSpansDropped, {labels().queue_full, 0, 0},
                             int64_t(dropped));
    }
    batch_size_.store(config->max_spans, std::memory_order_relaxed);
    uint64_t period = uint64_t(config->max_delay.count());
    uv_timer_start(&tick_, onTick, period, period);
    config_ = std::move(config);
  }

  // Sends a batch when none is on its way: a full one at once, a partial one on a tick.
  void pump(bool tick) {
    if (!config_ || inflight_ || retrying_) return;
    size_t waiting = queue_.size();
    if (waiting == 0 || (waiting < config_->max_spans && !tick)) return;
    batch_spans_ = encodeExportRequest(body_, config_->service_name, [&](std::string& out) {
      return queue_.takeInto(out, config_->max_spans);
    });
    attempt_ = 0;
    transmit();
  }

  // The batch goes from body_ (kept for a retry) over the connection kept to the
  // collector: one TCP (and TLS) handshake for as long as the collector keeps it open,
  // not one a batch. A reload that names another endpoint gets a new connection here.
  void transmit() {
    ++attempt_;
    if (connection_ && connection_endpoint_ != config_->endpoint) {
      jwt::closeHttpConnection(connection_);
      connection_ = nullptr;
    }
    if (!connection_) {
      connection_ = jwt::openHttpConnection(&loop_, url_, kMaxResponseBytes);
      connection_endpoint_ = config_->endpoint;
    }
    inflight_ = true;
    jwt::sendHttpRequest(connection_, "POST", headers_, body_, uint64_t(config_->timeout.count()),
                         [this](jwt::HttpResult&& r) { done(r); });
  }

  void done(const jwt::HttpResult& r) {
    inflight_ = false;
    metrics::MetricStore& m = metrics::process();
    if (flushing_) {
      bool ok = r.status >= 200 && r.status < 300;
      m.add(metrics::Id::TracingExports, {ok ? labels().success : labels().failure, 0, 0});
      m.add(ok ? metrics::Id::TracingSpansExported : metrics::Id::TracingSpansDropped,
            {ok ? uint16_t(0) : labels().export_failed, 0, 0}, int64_t(batch_spans_));
      batch_spans_ = 0;
      if (ok) pump(true);
      if (!inflight_) endFinalFlush();
      return;
    }
    if (r.status >= 200 && r.status < 300) {
      m.add(metrics::Id::TracingExports, {labels().success, 0, 0});
      m.add(metrics::Id::TracingSpansExported, {}, int64_t(batch_spans_));
      failing_ = false;
      endBatch();
      return;
    }
    if (retryable(r) && attempt_ < kMaxAttempts) {
      m.add(metrics::Id::TracingExports, {labels().retry, 0, 0});
      uint64_t backoff = std::min(kMaxBackoffMs, kFirstBackoffMs << (attempt_ - 1));
      // Full jitter on our own backoff, so gateways that lost one collector together do
      // not come back to it together; a collector's Retry-After is taken as it is.
      uint64_t jittered = backoff / 2 + rng_() % (backoff / 2 + 1);
      uint64_t delay = retryAfterMs(r.retry_after, int64_t(time(nullptr))).value_or(jittered);
      retrying_ = true;
      uv_timer_start(&retry_, onRetry, delay, 0);
      return;
    }
    m.add(metrics::Id::TracingExports, {labels().failure, 0, 0});
    m.add(metrics::Id::TracingSpansDropped, {labels().export_failed, 0, 0}, int64_t(batch_spans_));
    if (!failing_) {  // once per streak of failures: a dead collector must not flood the log
      failing_ = true;
      std::string status = std::to_string(r.status);
      log::warn("trace export failed; spans dropped until the collector answers",
                {{"endpoint", config_->endpoint},
                 {"status", r.status ? std::string_view(status) : std::string_view()},
                 {"error", r.error},
                 {"attempts", std::to_string(attempt_)}});
    }
    endBatch();
  }

  void endBatch() {
    batch_spans_ = 0;
    if (body_.capacity() > kKeptBodyCapacity) body_ = std::string();
    pump(false);
  }

  SpanQueue queue_;
  std::atomic<size_t> batch_size_{SIZE_MAX};
  uv_loop_t loop_{};
  int wake_fd_ = -1;
  uv_poll_t wake_{};
  uv_timer_t tick_{};
  uv_timer_t retry_{};
  std::thread thread_;
  std::mutex mutex_;
  std::shared_ptr<const TracingConfig> pending_config_;
  bool stopping_ = false;
  // Loop thread only.
  std::shared_ptr<const TracingConfig> config_;
  jwt::HttpUrl url_;
  jwt::HttpHeaders headers_;  // the configuration's, and Content-Type
  jwt::HttpFetch* connection_ = nullptr;
  std::string connection_endpoint_;
  std::string body_;  // the batch being sent
  size_t batch_spans_ = 0;
  uint32_t attempt_ = 0;
  bool retrying_ = false;
  bool flushing_ = false;  // stopping: the last batches are on their way
  bool failing_ = false;
  bool inflight_ = false;
  std::minstd_rand rng_;
};

std::mutex g_mutex;  // guards starting and stopping
std::atomic<Thread*> g_thread{nullptr};

}  // namespace

std::optional<uint64_t> retryAfterMs(std::string_view v, int64_t now_unix) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  if (v.empty()) return std::nullopt;
  if (v.find_first_not_of("0123456789") == std::string_view::npos) {
    if (v.size() > 6) return kMaxRetryAfterMs;  // beyond the cap anyway; no overflow
    return std::min<uint64_t>(std::stoull(std::string(v)) * 1000, kMaxRetryAfterMs);
  }
  tm t{};
  std::string text(v);
  const char* end = strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &t);
  if (!end || *end) return std::nullopt;
  int64_t at = int64_t(timegm(&t));
  if (at <= now_unix) return 0;
  return std::min<uint64_t>(uint64_t(at - now_unix) * 1000, kMaxRetryAfterMs);
}

void Exporter::configure(std::shared_ptr<const TracingConfig> config) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Thread* t = g_thread.load();
  // Without tracing the workers stop submitting; spans already queued still go out with
  // the last configuration that had it.
  if (!config) return;
  metrics::MetricStore& m = metrics::process();
  m.add(metrics::Id::TracingSpansDropped, {labels().queue_full, 0, 0}, 0);
  m.add(metrics::Id::TracingSpansDropped, {labels().export_failed, 0, 0}, 0);
  m.add(metrics::Id::TracingSpansExported, {}, 0);
  for (uint16_t result : {labels().success, labels().retry, labels().failure}) {
    m.add(metrics::Id::TracingExports, {result, 0, 0}, 0);
  }
  if (!t) {
    t = new Thread(config->queue);
    g_thread.store(t);
    atShutdown([] { stop(); });
  }
  t->configure(std::move(config));
}

void Exporter::submit(std::string& span) {
  if (Thread* t = g_thread.load(std::memory_order_acquire)) t->submit(span);
}

void Exporter::stop() {
  std::lock_guard<std::mutex> lock(g_mutex);
  Thread* t = g_thread.exchange(nullptr);
  if (!t) return;
  t->stop();
  delete t;
}

}  // namespace gw::tracing
