// Whether a request's span is recorded and exported: the ratio sampler, optionally
// following the caller's decision (parent-based), as OpenTelemetry's
// ParentBased(TraceIdRatioBased) does.
#pragma once

#include <cstdint>

namespace gw::tracing {

class Sampler {
 public:
  // `ratio` in [0, 1].
  Sampler(double ratio, bool parent_based);

  // `parent_flags`: the caller's trace flags, when it sent a valid traceparent.
  bool sample(const uint8_t (&trace_id)[16], const uint8_t* parent_flags) const;

 private:
  // A trace is sampled when the 63 low bits of its id's second half are below this: the
  // decision depends on the trace id alone, so every gateway (and every OpenTelemetry SDK
  // using the same rule) keeps or drops the same traces at the same ratio.
  uint64_t bound_;
  bool all_;
  bool parent_based_;
};

}  // namespace gw::tracing
