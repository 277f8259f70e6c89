// The admin endpoints of SPEC §4, served on admin.address.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gw {

class Server;

using HeaderPairs = std::vector<std::pair<std::string_view, std::string_view>>;

struct AdminResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  HeaderPairs headers;  // views of static text
};

// request_id goes into error bodies (SPEC §3), as on the public listeners.
AdminResponse handleAdmin(Server& server, std::string_view method, std::string_view path,
                          std::string_view request_id);

}  // namespace gw
