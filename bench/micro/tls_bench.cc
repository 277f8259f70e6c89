// TLS costs the gateway pays, measured in memory (no sockets): full versus resumed
// handshakes for ECDSA P-256 and RSA 2048 certificates, and record encryption and
// decryption throughput at full 16 KiB records.
//
// Times are the server session's alone: the thread CPU time spent in its calls (robust
// to a busy machine; each reading costs ~0.3 us). The client's work, done in the same
// thread, is reported apart as client_us.
#include <benchmark/benchmark.h>
#include <time.h>

#include "tests/gateway/tls_test_util.h"

namespace gw {
namespace {

using tls_test::listenerTls;
using tls_test::Pair;
using tls_test::TestPki;
using tls_test::upstreamTls;

double threadSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

struct Timers {
  double server = 0;
  double client = 0;
};

// Feeds everything `from` has to `to`, adding the time spent to `spent`.
void timedTransfer(TlsSession& from, TlsSession& to, InputBlock& in, double& spent) {
  while (from.wantsWrite()) {
    iovec iov;
    from.output().peek(&iov, 1);
    double t0 = threadSeconds();
    to.feed(static_cast<const char*>(iov.iov_base), iov.iov_len, in, tls_test::kSinkLimit);
    spent += threadSeconds() - t0;
    from.output().drain(iov.iov_len);
  }
}

// One connection: true if it was established.
bool handshake(const std::shared_ptr<const TlsServerContext>& server,
               const std::shared_ptr<const TlsClientContext>& client, int max_version,
               Timers& t) {
  double t0 = threadSeconds();
  Pair p(server, client);
  SSL_set_max_proto_version(p.client.ssl(), max_version);
  p.client.start();
  t.client += threadSeconds() - t0;
  while (p.client.wantsWrite() || p.server.wantsWrite()) {
    timedTransfer(p.client, p.server, p.server_in, t.server);
    timedTransfer(p.server, p.client, p.client_in, t.client);
  }
  return p.established();
}

// Args: {0 = ECDSA P-256, 1 = RSA 2048}, {12, 13} (TLS version), {0 = full, 1 = resumed}.
void BM_TlsHandshake(benchmark::State& state) {
  const auto& pki = TestPki::get();
  std::string error;
  auto server = TlsServerContext::build(
      listenerTls({state.range(0) == 0 ? pki.default_ecdsa : pki.default_rsa}), &error);
  auto client = TlsClientContext::build(upstreamTls(pki.root_ca), &error);
  int version = state.range(1) == 12 ? TLS1_2_VERSION : TLS1_3_VERSION;
  bool resumed = state.range(2) == 1;
  if (!server || !client) {
    state.SkipWithError(error.c_str());
    return;
  }
  Timers warmup;
  handshake(server, client, version, warmup);  // leaves a ticket in the client's store
  Timers total;
  for (auto _ : state) {
    Timers t;
    // A fresh client context has no session to offer: a full handshake.
    auto fresh = resumed ? client : TlsClientContext::build(upstreamTls(pki.root_ca), &error);
    if (!handshake(server, fresh, version, t)) {
      state.SkipWithError("handshake failed");
      return;
    }
    state.SetIterationTime(t.server);
    total.client += t.client;
  }
  state.counters["client_us"] =
      benchmark::Counter(total.client * 1e6, benchmark::Counter::kAvgIterations);
}
BENCHMARK(BM_TlsHandshake)
    ->ArgNames({"rsa", "tls", "resumed"})
    ->ArgsProduct({{0, 1}, {13, 12}, {0, 1}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// What every accepted connection pays before the first byte: SSL_new and its BIO.
void BM_TlsServerSessionNew(benchmark::State& state) {
  std::string error;
  auto server = TlsServerContext::build(listenerTls({TestPki::get().default_ecdsa}), &error);
  for (auto _ : state) {
    TlsSession session(server);
    benchmark::DoNotOptimize(session.ssl());
  }
}
BENCHMARK(BM_TlsServerSessionNew);

// An established TLS 1.3 pair (AES-128-GCM, the suite most clients pick).
struct Established {
  Established()
      : pair(TlsServerContext::build(listenerTls({TestPki::get().default_ecdsa}), &error),
             TlsClientContext::build(upstreamTls(TestPki::get().root_ca), &error)) {
    pair.pump();
  }
  std::string error;
  Pair pair;
};

constexpr size_t kRecord = 16 * 1024;

void BM_TlsEncrypt16K(benchmark::State& state) {
  Established e;
  std::string data(kRecord, 'x');
  iovec iov{data.data(), data.size()};
  for (auto _ : state) {
    e.pair.server.encrypt(&iov, 1);
    e.pair.server.output().clear();
  }
  state.SetBytesProcessed(int64_t(state.iterations() * kRecord));
}
BENCHMARK(BM_TlsEncrypt16K);

void BM_TlsDecrypt16K(benchmark::State& state) {
  Established e;
  std::string data(kRecord, 'x');
  iovec iov{data.data(), data.size()};
  std::string wire;
  for (auto _ : state) {
    e.pair.client.encrypt(&iov, 1);
    wire = e.pair.client.output().toString();
    e.pair.client.output().clear();
    double t0 = threadSeconds();
    e.pair.server.feed(wire.data(), wire.size(), e.pair.server_in, tls_test::kSinkLimit);
    e.pair.server_in.consume(e.pair.server_in.unconsumed());
    e.pair.server_in.compact();
    state.SetIterationTime(threadSeconds() - t0);
  }
  state.SetBytesProcessed(int64_t(state.iterations() * kRecord));
}
BENCHMARK(BM_TlsDecrypt16K)->UseManualTime();

}  // namespace
}  // namespace gw
