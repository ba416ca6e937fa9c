// TLS settings and the OpenSSL context built from them, for AMQPS and HTTPS.
// Private to net/; OpenSSL and asio::ssl stay in the .cpp files that need
// them (tls_context.cpp, amqp_connection.cpp, http_server.cpp, server.cpp).
//
// TLS 1.2 and 1.3 only. With verify_peer the server asks for a client
// certificate and checks it against the CA file; a certificate that does not
// verify fails the handshake, and with fail_if_no_peer_cert so does none.
//
// Thread-safety: a context is built once at start and only read after.
#pragma once

#include <memory>
#include <string>

namespace boost::asio::ssl {
class context;
}
struct ssl_st;  // OpenSSL's SSL

namespace sluice::net {

struct TlsConfig {
    std::string cert_file;  // PEM: the server certificate (and its chain)
    std::string key_file;   // PEM: its private key
    std::string ca_file;    // PEM: CAs that client certificates must chain to
    bool verify_peer = false;
    bool fail_if_no_peer_cert = false;
    // What a verified client certificate's user name is, for EXTERNAL:
    // "distinguished_name" (RabbitMQ's default: the subject as RFC 4514 text,
    // "CN=alice,O=Example") or "common_name" (the subject's CN).
    std::string login_from = "distinguished_name";
    // OpenSSL cipher lists: TLS 1.2 ciphers (SSL_CTX_set_cipher_list) and
    // TLS 1.3 cipher suites (SSL_CTX_set_ciphersuites); "" = OpenSSL's defaults.
    std::string ciphers;
    std::string ciphersuites;
};

// A loaded TLS setup: the OpenSSL context, and how a client certificate
// names a user.
class TlsContext {
public:
    // Checks the settings and loads the files. Returns null and sets `error`
    // when something is missing or does not load.
    static std::unique_ptr<TlsContext> load(const TlsConfig& config, std::string& error);
    ~TlsContext();

    boost::asio::ssl::context& context() { return *context_; }
    // After a handshake: the user name the peer's verified certificate gives,
    // or "" when it sent none or the server did not verify it.
    std::string peer_user(ssl_st* ssl) const;
    // The negotiated protocol, as OpenSSL names it ("TLSv1.3").
    static std::string protocol(ssl_st* ssl);

private:
    TlsContext() = default;
    std::unique_ptr<boost::asio::ssl::context> context_;
    std::string login_from_;
};

}  // namespace sluice::net
