// Building TLS contexts: certificate selection rules, and every way a configuration's
// files can be wrong, with the "FILE: message" the loader reports.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "gateway/config/config_context.h"
#include "gateway/tls/tls_context.h"
#include "tests/gateway/tls_test_util.h"

namespace gw {
namespace {

using tls_test::listenerTls;
using tls_test::TestPki;
using tls_test::upstreamTls;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::shared_ptr<const TlsServerContext> buildOk(const ListenerTls& tls) {
  std::string error;
  auto ctx = TlsServerContext::build(tls, &error);
  EXPECT_TRUE(ctx) << error;
  return ctx;
}

// A path as messages show it.
std::string q(const std::string& path) { return quoteValue(path); }

std::string buildError(const ListenerTls& tls) {
  std::string error;
  auto ctx = TlsServerContext::build(tls, &error);
  EXPECT_FALSE(ctx);
  EXPECT_EQ(validateListenerTls(tls), error);
  return error;
}

TEST(TlsServerContextTest, SelectsByExactNameThenWildcardElseTheFirst) {
  const auto& pki = TestPki::get();
  auto ctx = buildOk(listenerTls({pki.default_ecdsa, pki.api, pki.wildcard, pki.cn_only}));
  ASSERT_TRUE(ctx);
  EXPECT_EQ(ctx->certificateFor("default.test"), 0u);
  EXPECT_EQ(ctx->certificateFor("localhost"), 0u);
  EXPECT_EQ(ctx->certificateFor("api.example.com"), 1u);
  EXPECT_EQ(ctx->certificateFor("API.Example.COM."), 1u);  // case and a trailing dot
  EXPECT_EQ(ctx->certificateFor("x.wild.test"), 2u);
  EXPECT_EQ(ctx->certificateFor("a.b.wild.test"), 0u);  // a wildcard covers one label
  EXPECT_EQ(ctx->certificateFor("wild.test"), 0u);
  EXPECT_EQ(ctx->certificateFor(".wild.test"), 0u);
  EXPECT_EQ(ctx->certificateFor("legacy.test"), 3u);  // CN, as it has no SAN
  EXPECT_EQ(ctx->certificateFor("other.example.com"), 0u);
  EXPECT_EQ(ctx->certificateFor(""), 0u);
  EXPECT_EQ(ctx->certificateFor(std::string(300, 'a')), 0u);
  EXPECT_FALSE(ctx->requiresClientCertificate());
}

TEST(TlsServerContextTest, FirstCertificateNamingAHostWins) {
  const auto& pki = TestPki::get();
  // The RSA certificate has the same names as the ECDSA one: both serve them together.
  auto ctx = buildOk(listenerTls({pki.api, pki.default_ecdsa, pki.default_rsa}));
  ASSERT_TRUE(ctx);
  EXPECT_EQ(ctx->certificateFor("default.test"), 1u);
  EXPECT_EQ(ctx->certificateFor("nothing.test"), 0u);
}

TEST(TlsServerContextTest, ClientCaMakesClientCertificatesRequired) {
  const auto& pki = TestPki::get();
  auto ctx = buildOk(listenerTls({pki.default_ecdsa}, "TLSv1.3", pki.root_ca));
  ASSERT_TRUE(ctx);
  EXPECT_TRUE(ctx->requiresClientCertificate());
}

TEST(TlsServerContextTest, ReportsBadFilesWithTheirPath) {
  const auto& pki = TestPki::get();
  EXPECT_EQ(buildError(listenerTls({})), "a TLS listener needs a certificate");

  std::string e = buildError(listenerTls({{pki.garbage, pki.default_ecdsa.key_file}}));
  EXPECT_THAT(e, StartsWith(q(pki.garbage) + ": no PEM certificate"));

  e = buildError(listenerTls({{pki.default_ecdsa.cert_file, pki.garbage}}));
  EXPECT_THAT(e, StartsWith(q(pki.garbage) + ": no unencrypted PEM private key"));

  e = buildError(listenerTls({{pki.default_ecdsa.cert_file, pki.api.key_file}}));
  EXPECT_EQ(e, q(pki.api.key_file) + ": private key does not match certificate " +
                   q(pki.default_ecdsa.cert_file));

  e = buildError(listenerTls({{pki.path("missing.crt"), pki.default_ecdsa.key_file}}));
  EXPECT_THAT(e, StartsWith(q(pki.path("missing.crt")) + ": cannot read (No such file"));

  // Read as every configuration file is: never a device or a FIFO, never past 16 MiB.
  e = buildError(listenerTls({{"/dev/zero", pki.default_ecdsa.key_file}}));
  EXPECT_EQ(e, "'/dev/zero': cannot read (not a regular file (a character device))");

  e = buildError(listenerTls({pki.weak_rsa}));
  EXPECT_THAT(e, StartsWith(q(pki.weak_rsa.cert_file) + ": certificate refused ("));
  EXPECT_THAT(e, HasSubstr("too small"));

  e = buildError(listenerTls({pki.default_ecdsa, pki.evil}));
  EXPECT_EQ(e, q(pki.evil.cert_file) + ": same names and key type as " +
                   q(pki.default_ecdsa.cert_file) +
                   " (one certificate per key type for a set of names)");

  e = buildError(listenerTls({pki.default_ecdsa}, "TLSv1.2", pki.garbage));
  EXPECT_THAT(e, StartsWith(q(pki.garbage) + ": no usable CA certificate"));
}

TEST(TlsServerContextTest, ValidateAcceptsAGoodListener) {
  const auto& pki = TestPki::get();
  EXPECT_EQ(validateListenerTls(listenerTls({pki.default_ecdsa, pki.default_rsa, pki.api},
                                            "TLSv1.3", pki.root_ca)),
            "");
}

TEST(TlsClientContextTest, BuildsAndReportsBadFiles) {
  const auto& pki = TestPki::get();
  std::string error;
  auto ctx = TlsClientContext::build(upstreamTls(pki.root_ca, "api.internal", pki.client), &error);
  ASSERT_TRUE(ctx) << error;
  EXPECT_EQ(ctx->serverName(), "api.internal");
  EXPECT_TRUE(ctx->verifies());

  EXPECT_TRUE(TlsClientContext::build(upstreamTls(""), &error)) << "system store: " << error;

  EXPECT_THAT(validateUpstreamTls(upstreamTls(pki.garbage)),
              StartsWith(q(pki.garbage) + ": no usable CA certificate"));
  EXPECT_EQ(validateUpstreamTls(
                upstreamTls(pki.root_ca, "", {pki.client.cert_file, pki.api.key_file})),
            q(pki.api.key_file) + ": private key does not match certificate " +
                q(pki.client.cert_file));
  EXPECT_EQ(validateUpstreamTls(upstreamTls(pki.root_ca, "", pki.client)), "");
}

}  // namespace
}  // namespace gw
