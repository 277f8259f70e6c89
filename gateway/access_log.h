// The access log line of SPEC §6, built once per request from its exchange's state.
#pragma once

#include <string_view>

namespace gw {

class Worker;
class Exchange;

void writeAccessLog(Worker& worker, const Exchange& exchange);

}  // namespace gw
