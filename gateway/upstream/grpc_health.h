// The two messages of a grpc.health.v1.Health/Check call, as gRPC frames them on an HTTP/2
// stream: a 5-byte prefix (compressed flag, 4-byte big-endian length) and the protobuf.
// Only the bits a health check needs; the response comes from the network and is hostile.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gw::grpc_health {

// grpc.health.v1.HealthCheckResponse.ServingStatus
enum ServingStatus : uint64_t { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };

// The largest response body decodeResponse() looks at: the real one is 7 bytes.
constexpr size_t kMaxResponseBody = 4096;

// The request body: one uncompressed gRPC message holding HealthCheckRequest{service}
// (an empty protobuf for the empty name: the server as a whole).
std::string encodeRequest(std::string_view service);

// The `status` of the response body (every DATA byte of the stream), or nullopt unless it
// is exactly one uncompressed, well-formed HealthCheckResponse no longer than
// kMaxResponseBody. A missing status field is kUnknown, as proto3 says; values outside
// the enum come back as they are (the caller only trusts kServing).
std::optional<uint64_t> decodeResponse(std::string_view body);

}  // namespace gw::grpc_health
