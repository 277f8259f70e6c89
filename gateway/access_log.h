// The access log line of SPEC §6, built once per request from the request's state.
#pragma once

#include <string_view>

namespace gw {

class Worker;
struct Request;

void writeAccessLog(Worker& worker, const Request& request);

}  // namespace gw
