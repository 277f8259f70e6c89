// The process's OTLP/HTTP span exporter: a thread with a libuv loop of its own that takes
// spans from the bounded SpanQueue in batches and POSTs them to the collector.
//
// Why a thread and not the workers' loops: an export is a few hundred KiB of body and a
// wait of up to otlp.timeout; on a worker that is latency for its requests, and N
// workers would mean N half-empty batches. The workers' only cost is encoding a sampled
// span and one short lock to queue it.
//
// Contract:
// - configure() from the thread that loads configurations (start and every reload): the
//   first tracing configuration starts the thread; later ones change where and how spans
//   are sent, from the next batch on. A configuration without tracing stops new spans
//   (the workers' configurations say so) and lets the queued ones go out.
// - submit() from any worker: never blocks on the network; a full queue drops the span
//   and counts it in gateway_tracing_spans_dropped_total{reason="queue_full"}.
// - One export in flight at a time, over one connection kept to the collector from batch
//   to batch (opened again when the collector closes it or a request fails). 429, 502, 503, 504, a connection failure or a timeout
//   are retried (Retry-After honoured, else exponential backoff) up to kMaxAttempts;
//   spans of a batch given up are counted dropped (reason="export_failed"). While a batch
//   waits, new spans wait in the queue: memory is the queue's and one batch's, whatever
//   the collector does.
// - The collector's answers are read bounded (body, Retry-After) and under otlp.timeout.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "gateway/tracing/tracing_config.h"

namespace gw::tracing {

class Exporter {
 public:
  static void configure(std::shared_ptr<const TracingConfig> config);
  // Takes the encoded span (appendSpanField) by swapping: `span` comes back empty.
  static void submit(std::string& span);
  // Sends what is queued (no retries, within one otlp.timeout), then ends the thread. The
  // process's shutdown hooks run it, after the workers have stopped.
  static void stop();
};

// A collector's Retry-After (RFC 9110 §10.2.3: delay-seconds or an HTTP-date) in
// milliseconds, at most kMaxRetryAfterMs; nullopt when absent or unreadable (the backoff
// applies then).
std::optional<uint64_t> retryAfterMs(std::string_view value, int64_t now_unix);
// A collector asking for longer is still retried after this: a gateway that waited an
// hour would drop every span of that hour anyway.
constexpr uint64_t kMaxRetryAfterMs = 60000;

}  // namespace gw::tracing
