#include "gateway/client_ip.h"

#include <arpa/inet.h>

#include <cstring>
#include <string>

namespace gw {

bool isTrusted(const std::vector<Cidr>& trusted, const uint8_t (&ip16)[16]) {
  for (const auto& c : trusted) {
    if (c.contains(ip16)) return true;
  }
  return false;
}

bool parseIp16(std::string_view text, uint8_t (&out)[16]) {
  char buf[64];
  if (text.empty() || text.size() >= sizeof buf) return false;
  // "[v6]" and "v4:port" forms appear in X-Forwarded-For from some proxies.
  if (text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return false;
    text = text.substr(1, close - 1);
  } else if (text.find(':') != text.rfind(':')) {
    // IPv6 without brackets: take as is.
  } else if (size_t colon = text.find(':'); colon != std::string_view::npos) {
    text = text.substr(0, colon);
  }
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = 0;
  in_addr v4;
  if (inet_pton(AF_INET, buf, &v4) == 1) {
    std::memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    std::memcpy(out + 12, &v4, 4);
    return true;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, buf, &v6) == 1) {
    std::memcpy(out, &v6, 16);
    return true;
  }
  return false;
}

std::string_view resolveClientIp(const std::vector<Cidr>& trusted, std::string_view peer_text,
                                 const uint8_t (&peer_ip16)[16], std::string_view xff,
                                 uint8_t (&ip16)[16]) {
  std::memcpy(ip16, peer_ip16, 16);
  if (trusted.empty() || xff.empty() || !isTrusted(trusted, peer_ip16)) return peer_text;
  std::string_view result = peer_text;
  // Walk from the right: each hop we trust vouches for the one before it.
  while (!xff.empty()) {
    size_t comma = xff.rfind(',');
    std::string_view hop = comma == std::string_view::npos ? xff : xff.substr(comma + 1);
    xff = comma == std::string_view::npos ? std::string_view() : xff.substr(0, comma);
    while (!hop.empty() && (hop.front() == ' ' || hop.front() == '\t')) hop.remove_prefix(1);
    while (!hop.empty() && (hop.back() == ' ' || hop.back() == '\t')) hop.remove_suffix(1);
    uint8_t hop16[16];
    if (!parseIp16(hop, hop16)) break;  // garbage: stop at the last address we could verify
    std::memcpy(ip16, hop16, 16);
    result = hop;
    if (!isTrusted(trusted, hop16)) break;
  }
  return result;
}

}  // namespace gw
