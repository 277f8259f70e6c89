#include "gateway/tracing/sampler.h"

#include "gateway/tracing/trace_context.h"

namespace gw::tracing {

Sampler::Sampler(double ratio, bool parent_based)
    : bound_(ratio <= 0   ? 0
             : ratio >= 1 ? UINT64_MAX
                          : uint64_t(ratio * 9223372036854775808.0)),
      all_(ratio >= 1),
      parent_based_(parent_based) {}

bool Sampler::sample(const uint8_t (&trace_id)[16], const uint8_t* parent_flags) const {
  if (parent_based_ && parent_flags) return (*parent_flags & kSampledFlag) != 0;
  if (all_) return true;
  uint64_t low = 0;
  for (int i = 8; i < 16; ++i) low = low << 8 | trace_id[i];
  return (low & INT64_MAX) < bound_;
}

}  // namespace gw::tracing
