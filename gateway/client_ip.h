// The real client address: the TCP peer, or, when the peer is a trusted proxy, the
// right-most X-Forwarded-For address that is not itself a trusted proxy (what nginx's
// real_ip_recursive and Envoy's xff_num_trusted_hops do).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "gateway/config/config.h"

namespace gw {

bool isTrusted(const std::vector<Cidr>& trusted, const uint8_t (&ip16)[16]);

// Parses a textual IPv4/IPv6 address into the 16-byte mapped form.
bool parseIp16(std::string_view text, uint8_t (&out)[16]);

// Returns the client address text (a view into `xff` or `peer_text`) and fills ip16.
std::string_view resolveClientIp(const std::vector<Cidr>& trusted, std::string_view peer_text,
                                 const uint8_t (&peer_ip16)[16], std::string_view xff,
                                 uint8_t (&ip16)[16]);

}  // namespace gw
