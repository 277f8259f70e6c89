// Real handshakes between a server and a client TlsSession, wired back to back in
// memory: versions, SNI, ALPN, mTLS, resumption, verification, transfers, close_notify.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/rand.h>

#include <cstring>
#include <random>
#include <thread>

#include "gateway/config/config_context.h"
#include "gateway/tls/tls_context.h"
#include "gateway/tls/tls_session.h"
#include "tests/gateway/tls_test_util.h"

namespace gw {
namespace {

using tls_test::listenerTls;
using tls_test::Pair;
using tls_test::TestPki;
using tls_test::transfer;
using tls_test::upstreamTls;
using ::testing::HasSubstr;

std::shared_ptr<const TlsServerContext> serverCtx(const ListenerTls& tls,
                                                  const TlsServerContext* previous = nullptr,
                                                  const TlsServerOptions& options = {}) {
  std::string error;
  auto ctx = TlsServerContext::build(tls, &error, previous, options);
  if (!ctx) ADD_FAILURE() << error;
  return ctx;
}

std::shared_ptr<const TlsClientContext> clientCtx(const UpstreamTls& tls) {
  std::string error;
  auto ctx = TlsClientContext::build(tls, &error);
  if (!ctx) ADD_FAILURE() << error;
  return ctx;
}

std::shared_ptr<const TlsServerContext> defaultServer() {
  const auto& pki = TestPki::get();
  return serverCtx(listenerTls({pki.default_ecdsa, pki.default_rsa, pki.api, pki.wildcard}));
}

// Trusts the test root and checks names, like a real upstream connection.
std::shared_ptr<const TlsClientContext> verifyingClient(const std::string& sni = "") {
  return clientCtx(upstreamTls(TestPki::get().root_ca, sni));
}

// Looks at whatever certificate it is given: for tests about which one is served.
std::shared_ptr<const TlsClientContext> lookingClient(const std::string& sni) {
  UpstreamTls tls = upstreamTls(TestPki::get().root_ca, sni);
  tls.verify = false;
  return clientCtx(tls);
}

int peerKeyType(const TlsSession& s) {
  return EVP_PKEY_get_base_id(X509_get0_pubkey(SSL_get0_peer_certificate(s.ssl())));
}

std::string randomBytes(size_t n) {
  std::string out(n, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), int(n));
  return out;
}

// ---------------------------------------------------------------- versions

TEST(TlsSessionTest, Tls13HandshakeReportsWhatWasNegotiated) {
  Pair p(defaultServer(), verifyingClient());
  p.pump();
  ASSERT_TRUE(p.established()) << p.server.error() << " / " << p.client.error();
  for (const TlsSession* s : {&p.server, &p.client}) {
    EXPECT_EQ(s->info().version, "TLSv1.3");
    EXPECT_EQ(s->info().alpn, "http/1.1");
    EXPECT_EQ(s->info().server_name, "default.test");
    EXPECT_FALSE(s->info().resumed);
    EXPECT_EQ(s->info().verify_result, X509_V_OK);
  }
  EXPECT_THAT(p.server.info().cipher, testing::StartsWith("TLS_"));
  EXPECT_EQ(p.server.info().peer_subject, "");  // no client certificate
  EXPECT_EQ(p.client.info().peer_subject, "CN=default.test,O=Gateway Tests");
  EXPECT_EQ(peerKeyType(p.client), EVP_PKEY_EC);  // ECDSA preferred when both are there
}

TEST(TlsSessionTest, ServerPicksTheSuiteUnlessTheClientPrefersChacha) {
  auto suite = [](const char* tls13, const char* tls12, int max_version) {
    Pair p(defaultServer(), verifyingClient());
    SSL_set_ciphersuites(p.client.ssl(), tls13);
    SSL_set_cipher_list(p.client.ssl(), tls12);
    SSL_set_max_proto_version(p.client.ssl(), max_version);
    p.pump();
    EXPECT_TRUE(p.established()) << p.server.error();
    return std::string(p.server.info().cipher);
  };
  const char* aes256_first = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256";
  const char* chacha_first = "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";
  const char* all12 = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256";
  EXPECT_EQ(suite(aes256_first, all12, TLS1_3_VERSION), "TLS_AES_128_GCM_SHA256");
  EXPECT_EQ(suite(chacha_first, all12, TLS1_3_VERSION), "TLS_CHACHA20_POLY1305_SHA256");
  EXPECT_EQ(suite(aes256_first, all12, TLS1_2_VERSION), "ECDHE-ECDSA-AES128-GCM-SHA256");
  EXPECT_EQ(suite(aes256_first, "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256",
                  TLS1_2_VERSION),
            "ECDHE-ECDSA-CHACHA20-POLY1305");
}

TEST(TlsSessionTest, Tls12Handshake) {
  Pair p(defaultServer(), verifyingClient());
  SSL_set_max_proto_version(p.client.ssl(), TLS1_2_VERSION);
  p.pump();
  ASSERT_TRUE(p.established()) << p.server.error() << " / " << p.client.error();
  EXPECT_EQ(p.server.info().version, "TLSv1.2");
  EXPECT_EQ(p.server.info().cipher, "ECDHE-ECDSA-AES128-GCM-SHA256");
  EXPECT_EQ(p.server.info().alpn, "http/1.1");
}

TEST(TlsSessionTest, RsaCertificateForClientsThatOnlyDoRsa) {
  Pair p(defaultServer(), verifyingClient());
  SSL_set1_sigalgs_list(p.client.ssl(), "rsa_pss_rsae_sha256:rsa_pkcs1_sha256");
  p.pump();
  ASSERT_TRUE(p.established()) << p.server.error() << " / " << p.client.error();
  EXPECT_EQ(peerKeyType(p.client), EVP_PKEY_RSA);
}

TEST(TlsSessionTest, Tls11IsRefused) {
  Pair p(defaultServer(), lookingClient("default.test"));
  SSL* c = p.client.ssl();
  SSL_set_security_level(c, 0);  // OpenSSL 3 will not even offer TLS 1.1 otherwise
  SSL_set_cipher_list(c, "DEFAULT:@SECLEVEL=0");
  SSL_set_min_proto_version(c, TLS1_VERSION);
  SSL_set_max_proto_version(c, TLS1_1_VERSION);
  p.pump();
  EXPECT_EQ(p.server.state(), TlsState::Error);
  EXPECT_THAT(p.server.error(), HasSubstr("unsupported protocol"));
  EXPECT_EQ(p.client.state(), TlsState::Error);
}

TEST(TlsSessionTest, MinVersion13RefusesTls12) {
  const auto& pki = TestPki::get();
  auto server = serverCtx(listenerTls({pki.default_ecdsa}, "TLSv1.3"));
  Pair old(server, verifyingClient());
  SSL_set_max_proto_version(old.client.ssl(), TLS1_2_VERSION);
  old.pump();
  EXPECT_EQ(old.server.state(), TlsState::Error);
  EXPECT_THAT(old.server.error(), HasSubstr("unsupported protocol"));

  Pair modern(server, verifyingClient());
  modern.pump();
  ASSERT_TRUE(modern.established()) << modern.server.error();
  EXPECT_EQ(modern.server.info().version, "TLSv1.3");
}

// ---------------------------------------------------------------- SNI

struct SniCase {
  const char* sni;
  const char* served_cn;
};

TEST(TlsSessionTest, SniChoosesTheCertificate) {
  auto server = defaultServer();
  const SniCase cases[] = {
      {"api.example.com", "api.example.com"}, {"API.EXAMPLE.COM", "api.example.com"},
      {"x.wild.test", "wild.test"},           {"a.b.wild.test", "default.test"},
      {"unknown.test", "default.test"},       {"default.test", "default.test"},
  };
  for (const SniCase& c : cases) {
    Pair p(server, lookingClient(c.sni));
    p.pump();
    ASSERT_TRUE(p.established()) << c.sni << ": " << p.server.error();
    EXPECT_EQ(p.client.info().peer_subject, std::string("CN=") + c.served_cn + ",O=Gateway Tests")
        << c.sni;
    EXPECT_EQ(p.server.info().server_name, toLowerAscii(c.sni));
  }
}

TEST(TlsSessionTest, NoSniGetsTheDefaultCertificateAndIpsAreVerified) {
  // An IP endpoint sends no SNI; the certificate must name the address.
  Pair p(defaultServer(), verifyingClient(), "127.0.0.1:8443");
  p.pump();
  ASSERT_TRUE(p.established()) << p.client.error();
  EXPECT_EQ(p.server.info().server_name, "");
  EXPECT_EQ(p.client.info().peer_subject, "CN=default.test,O=Gateway Tests");

  Pair wrong_ip(defaultServer(), verifyingClient(), "127.0.0.2:8443");
  wrong_ip.pump();
  EXPECT_EQ(wrong_ip.client.state(), TlsState::Error);
  EXPECT_THAT(wrong_ip.client.error(), HasSubstr("IP address mismatch"));
}

// ---------------------------------------------------------------- ALPN

TEST(TlsSessionTest, AlpnOnlyEverSaysHttp11) {
  auto server = defaultServer();
  auto offer = [&](std::string_view wire) {
    Pair p(server, verifyingClient());
    SSL_set_alpn_protos(p.client.ssl(), reinterpret_cast<const unsigned char*>(wire.data()),
                        unsigned(wire.size()));
    p.pump();
    EXPECT_TRUE(p.established()) << p.server.error();
    return std::string(p.server.info().alpn) + "|" + std::string(p.client.info().alpn);
  };
  EXPECT_EQ(offer(std::string_view("\x02h2\x08http/1.1", 12)), "http/1.1|http/1.1");
  EXPECT_EQ(offer(std::string_view("\x02h2", 3)), "|");  // no h2, and no failure either
  EXPECT_EQ(offer(std::string_view("\x08http/1.0", 9)), "|");

  Pair none(server, verifyingClient());
  SSL_set_alpn_protos(none.client.ssl(), nullptr, 0);
  none.pump();
  ASSERT_TRUE(none.established());
  EXPECT_EQ(none.server.info().alpn, "");
}

// ---------------------------------------------------------------- mTLS

TEST(TlsSessionTest, ClientCertificateAccepted) {
  const auto& pki = TestPki::get();
  auto server = serverCtx(listenerTls({pki.default_ecdsa}, "TLSv1.2", pki.root_ca));
  for (int max : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    Pair p(server, clientCtx(upstreamTls(pki.root_ca, "", pki.client)));
    SSL_set_max_proto_version(p.client.ssl(), max);
    p.pump();
    ASSERT_TRUE(p.established()) << p.server.error() << " / " << p.client.error();
    EXPECT_EQ(p.server.info().peer_subject, "CN=client.test,O=Gateway Tests");
    EXPECT_EQ(p.server.info().verify_result, X509_V_OK);
  }
}

TEST(TlsSessionTest, ClientCertificateMissingOrUntrustedIsRefused) {
  const auto& pki = TestPki::get();
  auto server = serverCtx(listenerTls({pki.default_ecdsa}, "TLSv1.2", pki.root_ca));

  Pair anonymous(server, verifyingClient());
  anonymous.pump();
  EXPECT_EQ(anonymous.server.state(), TlsState::Error);
  EXPECT_THAT(anonymous.server.error(), HasSubstr("peer did not return a certificate"));
  // In TLS 1.3 the client believes it is done until the server's alert arrives.
  EXPECT_EQ(anonymous.client.state(), TlsState::Error);

  Pair untrusted(server, clientCtx(upstreamTls(pki.root_ca, "", pki.evil_client)));
  untrusted.pump();
  EXPECT_EQ(untrusted.server.state(), TlsState::Error);
  EXPECT_THAT(untrusted.server.error(), HasSubstr("certificate verify failed"));
  EXPECT_THAT(untrusted.server.error(), HasSubstr("unable to get local issuer certificate"));
}

// ---------------------------------------------------------------- verification

TEST(TlsSessionTest, UntrustedServerIsRefused) {
  const auto& pki = TestPki::get();
  Pair p(defaultServer(), clientCtx(upstreamTls(pki.evil_ca)));
  p.pump();
  EXPECT_EQ(p.client.state(), TlsState::Error);
  EXPECT_THAT(p.client.error(), HasSubstr("certificate verify failed"));
  EXPECT_EQ(p.server.state(), TlsState::Error);
  EXPECT_THAT(p.server.error(), HasSubstr("alert unknown ca"));

  // The evil certificate names the right host but chains to the evil CA.
  Pair impostor(serverCtx(listenerTls({pki.evil})), verifyingClient());
  impostor.pump();
  EXPECT_EQ(impostor.client.state(), TlsState::Error);
}

TEST(TlsSessionTest, WrongHostNameIsRefusedUnlessVerifyIsOff) {
  Pair p(defaultServer(), verifyingClient("wrong.test"));
  p.pump();
  EXPECT_EQ(p.client.state(), TlsState::Error);
  EXPECT_THAT(p.client.error(), HasSubstr("hostname mismatch"));

  UpstreamTls unchecked = upstreamTls(TestPki::get().evil_ca, "wrong.test");
  unchecked.verify = false;
  Pair lax(defaultServer(), clientCtx(unchecked));
  lax.pump();
  EXPECT_TRUE(lax.established()) << lax.client.error();
  EXPECT_NE(lax.client.info().verify_result, X509_V_OK);  // recorded, not enforced
}

TEST(TlsSessionTest, SystemStoreDoesNotTrustTheTestCa) {
  Pair p(defaultServer(), clientCtx(upstreamTls("")));
  p.pump();
  EXPECT_EQ(p.client.state(), TlsState::Error);
  EXPECT_THAT(p.client.error(), HasSubstr("certificate verify failed"));
}

// ---------------------------------------------------------------- resumption

struct ResumeCase {
  int max_version;
  const char* name;
  friend void PrintTo(const ResumeCase& c, std::ostream* os) { *os << c.name; }
};

class TlsResumptionTest : public testing::TestWithParam<ResumeCase> {
 protected:
  // One connection through `client`; returns whether it resumed (checked on both sides).
  bool connect(std::shared_ptr<const TlsServerContext> server,
               std::shared_ptr<const TlsClientContext> client) {
    Pair p(std::move(server), std::move(client));
    SSL_set_max_proto_version(p.client.ssl(), GetParam().max_version);
    p.pump();
    EXPECT_TRUE(p.established()) << p.server.error() << " / " << p.client.error();
    EXPECT_EQ(p.server.info().resumed, p.client.info().resumed);
    return p.server.info().resumed;
  }
};

TEST_P(TlsResumptionTest, TicketsResume) {
  auto server = defaultServer();
  auto client = verifyingClient();
  EXPECT_FALSE(connect(server, client));
  EXPECT_TRUE(connect(server, client));
  EXPECT_TRUE(connect(server, client));
}

TEST_P(TlsResumptionTest, RotatedKeysStillOpenTicketsUntilTheyFallOff) {
  TlsServerOptions options;
  options.ticket_keys = 2;
  const auto& pki = TestPki::get();
  auto server = serverCtx(listenerTls({pki.default_ecdsa}), nullptr, options);
  auto client = verifyingClient();
  EXPECT_FALSE(connect(server, client));
  server->rotateTicketKeys();
  EXPECT_TRUE(connect(server, client));  // the previous key opens it; a new ticket comes back
  server->rotateTicketKeys();
  EXPECT_TRUE(connect(server, client));
  server->rotateTicketKeys();
  server->rotateTicketKeys();
  EXPECT_FALSE(connect(server, client));  // its key is gone
}

TEST_P(TlsResumptionTest, ReloadKeepsTicketsButNotAcrossClientCaChanges) {
  const auto& pki = TestPki::get();
  auto first = serverCtx(listenerTls({pki.default_ecdsa}));
  auto client = clientCtx(upstreamTls(pki.root_ca, "", pki.client));
  EXPECT_FALSE(connect(first, client));
  auto reloaded = serverCtx(listenerTls({pki.default_ecdsa, pki.api}), first.get());
  EXPECT_TRUE(connect(reloaded, client));
  // A session made without a client certificate must not skip one now required.
  auto mtls = serverCtx(listenerTls({pki.default_ecdsa}, "TLSv1.2", pki.root_ca), reloaded.get());
  EXPECT_FALSE(connect(mtls, client));
  auto unrelated = serverCtx(listenerTls({pki.default_ecdsa}));
  EXPECT_FALSE(connect(unrelated, client));
}

TEST_P(TlsResumptionTest, SessionIdCacheWithoutTickets) {
  auto server = defaultServer();
  auto client = verifyingClient();
  auto connect_without_tickets = [&] {
    Pair p(server, client);
    SSL_set_max_proto_version(p.client.ssl(), GetParam().max_version);
    SSL_set_options(p.client.ssl(), SSL_OP_NO_TICKET);
    p.pump();
    EXPECT_TRUE(p.established());
    return p.server.info().resumed;
  };
  EXPECT_FALSE(connect_without_tickets());
  EXPECT_TRUE(connect_without_tickets());
}

INSTANTIATE_TEST_SUITE_P(Versions, TlsResumptionTest,
                         testing::Values(ResumeCase{TLS1_3_VERSION, "TLS13"},
                                         ResumeCase{TLS1_2_VERSION, "TLS12"}),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------- data

TEST(TlsSessionTest, LargeTransfersBothWays) {
  Pair p(defaultServer(), verifyingClient());
  p.pump();
  ASSERT_TRUE(p.established());
  const std::string up = randomBytes(3 * 1024 * 1024 + 123);
  const std::string down = randomBytes(5 * 1024 * 1024 + 7);
  // Uneven pieces, as reads and body chunks come.
  std::mt19937 rng(42);
  std::string got_up, got_down;
  for (size_t at = 0; at < up.size();) {
    size_t n = std::min<size_t>(up.size() - at, 1 + rng() % 70000);
    iovec iov{const_cast<char*>(up.data() + at), n};
    ASSERT_TRUE(p.client.encrypt(&iov, 1));
    at += n;
    transfer(p.client, p.server, p.server_in);
    got_up += Pair::take(p.server_in);
  }
  Buffer response;
  for (size_t at = 0; at < down.size();) {
    size_t n = std::min<size_t>(down.size() - at, 1 + rng() % 70000);
    response.appendExternal(down.data() + at, n);
    at += n;
    if (response.size() > 200000 || at == down.size()) {
      ASSERT_TRUE(p.server.encrypt(response));
      EXPECT_TRUE(response.empty());
      transfer(p.server, p.client, p.client_in);
      got_down += Pair::take(p.client_in);
    }
  }
  EXPECT_TRUE(got_up == up);
  EXPECT_TRUE(got_down == down);
}

TEST(TlsSessionTest, SmallPiecesAreCoalescedIntoOneRecord) {
  Pair p(defaultServer(), verifyingClient());
  p.pump();
  ASSERT_TRUE(p.established());
  std::string head(300, 'h'), body(1000, 'b'), tail(5, 't');
  iovec iov[] = {
      {head.data(), head.size()}, {body.data(), body.size()}, {tail.data(), tail.size()}};
  ASSERT_TRUE(p.server.encrypt(iov, 3));
  // TLS 1.3 AEAD record: 5 header + plaintext + 1 content type + 16 tag.
  EXPECT_EQ(p.server.output().size(), 5 + 1305 + 1 + 16);

  // 40 KiB in 10 pieces: 16 + 16 + 8 KiB, three records.
  std::string big(4096, 'x');
  std::vector<iovec> pieces(10, iovec{big.data(), big.size()});
  p.server.output().clear();
  ASSERT_TRUE(p.server.encrypt(pieces.data(), pieces.size()));
  EXPECT_EQ(p.server.output().size(), 40960 + 3 * 22);
}

TEST(TlsSessionTest, FullSinkPausesAndResumes) {
  Pair p(defaultServer(), verifyingClient());
  p.pump();
  ASSERT_TRUE(p.established());
  const std::string data = randomBytes(200000);
  iovec iov{const_cast<char*>(data.data()), data.size()};
  ASSERT_TRUE(p.client.encrypt(&iov, 1));
  std::string got;
  // The server's sink holds at most one slice: it fills, is emptied, resumes.
  size_t all = p.client.output().size();
  std::string ciphertext = p.client.output().toString();
  p.client.output().drain(all);
  TlsFeedResult r = p.server.feed(ciphertext.data(), ciphertext.size(), p.server_in, kSliceSize);
  EXPECT_TRUE(r.sink_full);
  EXPECT_GT(p.server.pendingInput(), 0u);
  int rounds = 0;
  for (;;) {
    got += Pair::take(p.server_in);
    if (!r.sink_full) break;
    r = p.server.feed(nullptr, 0, p.server_in, kSliceSize);
    ++rounds;
  }
  EXPECT_GT(rounds, 5);
  EXPECT_EQ(p.server.pendingInput(), 0u);
  EXPECT_TRUE(got == data);
}

TEST(TlsSessionTest, FullSinkMidRecordStillReportsPendingInput) {
  Pair p(defaultServer(), verifyingClient());
  p.pump();
  ASSERT_TRUE(p.established());
  // One whole record arrives, but the sink has room for all of it but 100 bytes: every
  // ciphertext byte is consumed, the rest of the plaintext waits inside OpenSSL.
  size_t room = 0;
  std::memset(p.server_in.writable(&room, kSliceSize), 'x', 100);
  p.server_in.added(100);
  const std::string data = randomBytes(kSliceSize);
  iovec iov{const_cast<char*>(data.data()), data.size()};
  ASSERT_TRUE(p.client.encrypt(&iov, 1));
  std::string wire = p.client.output().toString();
  p.client.output().clear();
  TlsFeedResult r = p.server.feed(wire.data(), wire.size(), p.server_in, kSliceSize);
  EXPECT_TRUE(r.sink_full);
  EXPECT_EQ(r.plaintext, kSliceSize - 100);
  EXPECT_EQ(p.server.pendingInput(), 100u);
  std::string got = Pair::take(p.server_in).substr(100);
  r = p.server.feed(nullptr, 0, p.server_in, kSliceSize);
  EXPECT_FALSE(r.sink_full);
  EXPECT_EQ(p.server.pendingInput(), 0u);
  got += Pair::take(p.server_in);
  EXPECT_TRUE(got == data);
}

TEST(TlsSessionTest, ClientMayWriteBeforeTheHandshakeCompletes) {
  Pair p(defaultServer(), verifyingClient());
  Buffer request;
  std::string external = "GET / HTTP/1.1\r\nHost: default.test\r\n\r\n";
  request.appendExternal(external.data(), external.size());
  ASSERT_TRUE(p.client.encrypt(request));
  external.assign(external.size(), 'X');  // the session copied what it queued
  p.pump();
  ASSERT_TRUE(p.established());
  EXPECT_EQ(Pair::take(p.server_in), "GET / HTTP/1.1\r\nHost: default.test\r\n\r\n");
}

TEST(TlsSessionTest, CloseNotifyBothWays) {
  Pair p(defaultServer(), verifyingClient());
  p.pump();
  ASSERT_TRUE(p.established());
  std::string last = "last words";
  iovec iov{last.data(), last.size()};
  ASSERT_TRUE(p.client.encrypt(&iov, 1));
  p.client.shutdown();
  EXPECT_EQ(p.client.state(), TlsState::Closed);
  EXPECT_FALSE(p.client.encrypt(&iov, 1));
  transfer(p.client, p.server, p.server_in);
  EXPECT_EQ(Pair::take(p.server_in), "last words");
  EXPECT_EQ(p.server.state(), TlsState::Closed);
  EXPECT_TRUE(p.server.peerClosed());
  // TLS 1.3 half-close: the server may still answer, then closes too.
  ASSERT_TRUE(p.server.encrypt(&iov, 1));
  p.server.shutdown();
  transfer(p.server, p.client, p.client_in);
  EXPECT_EQ(Pair::take(p.client_in), "last words");
  EXPECT_TRUE(p.client.peerClosed());
  EXPECT_TRUE(p.client.error().empty());
}

TEST(TlsSessionTest, GarbageIsAnErrorNotACrash) {
  TlsSession server(defaultServer());
  InputBlock in;
  std::string junk = "GET / HTTP/1.1\r\nHost: plain-http-on-a-tls-port\r\n\r\n";
  TlsFeedResult r = server.feed(junk.data(), junk.size(), in, tls_test::kSinkLimit);
  EXPECT_EQ(r.plaintext, 0u);
  EXPECT_EQ(server.state(), TlsState::Error);
  EXPECT_FALSE(server.error().empty());
  EXPECT_FALSE(in.allocated());
  // Feeding more after the error is ignored.
  server.feed(junk.data(), junk.size(), in, tls_test::kSinkLimit);
  EXPECT_EQ(server.state(), TlsState::Error);
}

TEST(TlsSessionTest, ByteAtATimeHandshake) {
  Pair p(defaultServer(), verifyingClient());
  p.client.start();
  while (p.client.wantsWrite() || p.server.wantsWrite()) {
    for (auto [from, to, in] : {std::tuple{&p.client, &p.server, &p.server_in},
                                std::tuple{&p.server, &p.client, &p.client_in}}) {
      std::string bytes = from->output().toString();
      from->output().clear();
      for (char c : bytes) to->feed(&c, 1, *in, tls_test::kSinkLimit);
    }
  }
  EXPECT_TRUE(p.established()) << p.server.error() << " / " << p.client.error();
}

TEST(TlsSessionTest, IdleMemoryCanBeReleased) {
  Pair p(defaultServer(), verifyingClient());
  p.pump();
  ASSERT_TRUE(p.established());
  p.server.releaseIdleMemory();
  std::string msg = "after release";
  iovec iov{msg.data(), msg.size()};
  ASSERT_TRUE(p.client.encrypt(&iov, 1));
  transfer(p.client, p.server, p.server_in);
  EXPECT_EQ(Pair::take(p.server_in), msg);
  ASSERT_TRUE(p.server.encrypt(&iov, 1));
  transfer(p.server, p.client, p.client_in);
  EXPECT_EQ(Pair::take(p.client_in), msg);
}

TEST(TlsSessionTest, ContextsAreSharedAcrossThreads) {
  auto server = defaultServer();
  auto client = verifyingClient();
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        Pair p(server, client);
        p.pump();
        if (p.established()) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 100);
}

}  // namespace
}  // namespace gw
