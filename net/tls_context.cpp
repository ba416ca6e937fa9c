#include "net/tls_context.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/asio/ssl/context.hpp>
// asio::ssl's separately compiled part lives here, in sluice_net, so that
// sluice_asio (also linked by sluicectl) needs no OpenSSL.
#include <boost/asio/ssl/impl/src.hpp>

namespace sluice::net {

namespace ssl = boost::asio::ssl;

namespace {

std::string openssl_error() {
    unsigned long e = ERR_get_error();
    if (e == 0) return "";
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return buf;
}

std::string describe(const boost::system::error_code& ec) {
    std::string more = openssl_error();
    return more.empty() ? ec.message() : ec.message() + " (" + more + ")";
}

}  // namespace

TlsContext::~TlsContext() = default;

std::unique_ptr<TlsContext> TlsContext::load(const TlsConfig& config, std::string& error) {
    if (config.cert_file.empty() || config.key_file.empty()) {
        error = "TLS needs --tls-cert and --tls-key";
        return nullptr;
    }
    if (config.verify_peer && config.ca_file.empty()) {
        error = "--tls-verify-peer needs --tls-ca (the CAs client certificates must chain to)";
        return nullptr;
    }
    if (config.fail_if_no_peer_cert && !config.verify_peer) {
        error = "--tls-fail-if-no-peer-cert needs --tls-verify-peer";
        return nullptr;
    }
    if (config.login_from != "distinguished_name" && config.login_from != "common_name") {
        error = "--tls-cert-login-from must be distinguished_name or common_name";
        return nullptr;
    }
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
    boost::system::error_code ec;
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                         ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use,
                     ec);
    SSL_CTX* native = ctx->native_handle();
    if (ec || SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1) {
        error = "TLS: cannot restrict to TLS 1.2+: " + (ec ? describe(ec) : openssl_error());
        return nullptr;
    }
    // Resumed sessions skip client-certificate checks on some paths: keep
    // every handshake a full one (connections are long-lived anyway).
    SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(native, SSL_OP_NO_TICKET);
    // A client may not renegotiate (TLS 1.2): each renegotiation costs the
    // server a full handshake, a cheap way to burn its CPU, and it has been
    // the path of more than one attack.
    SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION);
    if (!config.ciphers.empty() && SSL_CTX_set_cipher_list(native, config.ciphers.c_str()) != 1) {
        error = "TLS: --tls-ciphers '" + config.ciphers + "' names no cipher OpenSSL has: " + openssl_error();
        return nullptr;
    }
    if (!config.ciphersuites.empty() && SSL_CTX_set_ciphersuites(native, config.ciphersuites.c_str()) != 1) {
        error = "TLS: --tls-ciphersuites '" + config.ciphersuites + "' is not a TLS 1.3 cipher suite list: " +
                openssl_error();
        return nullptr;
    }
    ctx->use_certificate_chain_file(config.cert_file, ec);
    if (ec) {
        error = "TLS: cannot load certificate " + config.cert_file + ": " + describe(ec);
        return nullptr;
    }
    ctx->use_private_key_file(config.key_file, ssl::context::pem, ec);
    if (ec) {
        error = "TLS: cannot load private key " + config.key_file + ": " + describe(ec);
        return nullptr;
    }
    if (SSL_CTX_check_private_key(native) != 1) {
        error = "TLS: private key " + config.key_file + " does not match certificate " + config.cert_file;
        ERR_clear_error();
        return nullptr;
    }
    if (!config.ca_file.empty()) {
        ctx->load_verify_file(config.ca_file, ec);
        if (ec) {
            error = "TLS: cannot load CA file " + config.ca_file + ": " + describe(ec);
            return nullptr;
        }
        // Tell clients which CAs we accept (some pick their certificate by it).
        if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(config.ca_file.c_str()))
            SSL_CTX_set_client_CA_list(native, names);
    }
    if (config.verify_peer) {
        ssl::verify_mode mode = ssl::verify_peer;
        if (config.fail_if_no_peer_cert) mode |= ssl::verify_fail_if_no_peer_cert;
        ctx->set_verify_mode(mode);
    } else {
        ctx->set_verify_mode(ssl::verify_none);
    }
    std::unique_ptr<TlsContext> tls(new TlsContext);
    tls->context_ = std::move(ctx);
    tls->login_from_ = config.login_from;
    return tls;
}

std::string TlsContext::peer_user(ssl_st* ssl) const {
    X509* cert = SSL_get0_peer_certificate(ssl);
    if (!cert || SSL_get_verify_result(ssl) != X509_V_OK) return "";
    // Only a certificate the server asked for and verified counts.
    if (!(SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER)) return "";
    X509_NAME* subject = X509_get_subject_name(cert);
    if (!subject) return "";
    if (login_from_ == "common_name") {
        int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
        if (i < 0) return "";
        const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
        unsigned char* utf8 = nullptr;
        int n = ASN1_STRING_to_UTF8(&utf8, data);
        if (n < 0) return "";
        std::string cn(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
        OPENSSL_free(utf8);
        return cn;
    }
    // RFC 2253/4514 text, most specific RDN first, UTF-8 kept as is.
    BIO* bio = BIO_new(BIO_s_mem());
    if (!bio) return "";
    std::string dn;
    if (X509_NAME_print_ex(bio, subject, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        char* data = nullptr;
        long n = BIO_get_mem_data(bio, &data);
        if (n > 0) dn.assign(data, static_cast<size_t>(n));
    }
    BIO_free(bio);
    return dn;
}

std::string TlsContext::protocol(ssl_st* ssl) { return SSL_get_version(ssl); }

}  // namespace sluice::net
