// The application log: one JSON object per line on stderr, written by spdlog's async
// logger so the event loop never waits on the terminal or the disk.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "gateway/config/config.h"

namespace gw::log {

using Field = std::pair<std::string_view, std::string_view>;

// Sets up the async thread pool and the application logger. Safe to call again (level).
void init(LogLevel level);
void setLevel(LogLevel level);
// Flushes and stops the background thread (at exit).
void shutdown();

void write(LogLevel level, std::string_view message, std::initializer_list<Field> fields = {});
inline void debug(std::string_view m, std::initializer_list<Field> f = {}) { write(LogLevel::Debug, m, f); }
inline void info(std::string_view m, std::initializer_list<Field> f = {}) { write(LogLevel::Info, m, f); }
inline void warn(std::string_view m, std::initializer_list<Field> f = {}) { write(LogLevel::Warn, m, f); }
inline void error(std::string_view m, std::initializer_list<Field> f = {}) { write(LogLevel::Error, m, f); }
bool enabled(LogLevel level);

// Lines for the access log (SPEC §6): "stdout", "off" or a file path. Returns false and
// sets `error` when the file cannot be opened.
bool openAccessLog(const std::string& target, std::string* error);
// Opens the access log's file again under the same path (SIGUSR1, after logrotate moved it),
// as nginx does on USR1; lines still queued go to the new file. False, with `error`, when
// the path cannot be opened: the old file is kept.
bool reopenAccessLog(std::string* error);
bool accessLogEnabled();
void writeAccessLine(std::string_view line);
// Has the access log's writer thread flush what it buffered, if a line came since the
// last call. A file is written through stdio's buffer (a write per few KiB rather than
// per line); the workers call this once a second, so that `tail -f` sees every line
// within about a second without a syscall per request.
void flushAccessLog();

}  // namespace gw::log
