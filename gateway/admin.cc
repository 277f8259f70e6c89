#include "gateway/admin.h"

#include "gateway/http_util.h"
#include "gateway/server.h"

namespace gw {

namespace {

AdminResponse json(int status, std::string body) {
  AdminResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

AdminResponse error(int status, std::string_view message) {
  return json(status, errorBody(errorCodeFor(status), message, "", wallClockMs()));
}

}  // namespace

AdminResponse handleAdmin(Server& server, std::string_view method, std::string_view path) {
  if (method != "GET" && method != "HEAD") return error(400, "Admin endpoints answer GET only");
  if (path == "/health/live") return json(200, R"({"status":"alive"})");
  if (path == "/health/startup") {
    return server.started() ? json(200, R"({"status":"started"})")
                            : json(503, R"({"status":"starting"})");
  }
  if (path == "/health/ready") {
    if (server.draining()) return json(503, R"({"status":"draining"})");
    if (!server.started()) return json(503, R"({"status":"starting"})");
    return json(200, R"({"status":"ready"})");
  }
  return error(404, "No such admin endpoint");
}

}  // namespace gw
