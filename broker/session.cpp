#include "broker/session.hpp"

#include <algorithm>

#include "broker/broker.hpp"
#include "broker/channel.hpp"
#include "net/amqp/frame.hpp"
#include "net/amqp/wire.hpp"
#include "net/amqp/methods.hpp"

namespace sluice::broker {

namespace m = amqp::method;

namespace {

// Arguments cut short or followed by stray bytes are RabbitMQ's 501; a
// malformed table inside them stays the spec's 502.
Status decode_error(amqp::DecodeError e, std::string_view payload, std::string_view method) {
    if (e == amqp::DecodeError::none) return std::nullopt;
    if (e == amqp::DecodeError::truncated || e == amqp::DecodeError::trailing_bytes) return cannot_decode(payload);
    return amqp_error(reply::syntax_error, "malformed " + std::string(method));
}

// The methods the session acts on by their ids alone (channel.open and
// .close, connection.close): their arguments must still decode, exactly.
Status check_peeked(std::string_view payload, std::string_view method) {
    amqp::Method decoded;
    return decode_error(amqp::decode_method(payload, decoded), payload, method);
}

amqp::FieldTable server_properties() {
    amqp::FieldTable caps;
    // Only what works; names exactly as RabbitMQ advertises them.
    for (const char* c : {"publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
                          "connection.blocked", "consumer_priorities",
                          "authentication_failure_close", "per_consumer_qos", "direct_reply_to"})
        caps.set(c, true);
    amqp::FieldTable p;
    p.set("capabilities", std::move(caps));
    p.set("product", "Sluice");
    p.set("version", "0.1.0");
    p.set("platform", "C++20");
    p.set("copyright", "Sluice authors");
    p.set("information", "AMQP 0-9-1 broker; see README.md");
    p.set("cluster_name", "sluice");
    return p;
}

// AMQPLAIN's response is a field table without its length prefix.
bool parse_amqplain(std::string_view response, std::string& user, std::string& password) {
    std::string framed(4, '\0');
    amqp::patch_u32(framed, 0, static_cast<uint32_t>(response.size()));
    framed.append(response);
    std::string_view in = framed;
    amqp::FieldTable t;
    if (amqp::decode_table(in, t) != amqp::TableError::none) return false;
    auto login = t.find("LOGIN");
    auto pass = t.find("PASSWORD");
    if (!login || !pass || !login->as_string() || !pass->as_string()) return false;
    user = *login->as_string();
    password = *pass->as_string();
    return true;
}

// PLAIN: [authzid] NUL authcid NUL password.
bool parse_plain(std::string_view response, std::string& user, std::string& password) {
    auto first = response.find('\0');
    if (first == std::string_view::npos) return false;
    auto second = response.find('\0', first + 1);
    if (second == std::string_view::npos) return false;
    user = response.substr(first + 1, second - first - 1);
    password = response.substr(second + 1);
    return true;
}

}  // namespace

Session::Session(Broker& broker, SessionHost& host, ConnectionInfo info)
    : broker_(broker),
      host_(host),
      info_(std::move(info)),
      id_(broker.next_connection_id()),
      channel_max_(broker.config().channel_max),
      frame_max_(broker.config().frame_max) {
    ++broker_.stats().connections_opened;
    broker_.register_session(this);
}

Session::~Session() {
    broker_.unregister_session(this);
    teardown();
}

// As RabbitMQ: connection.blocked goes to publishing connections only (a
// connection that only consumes is never blocked, and a client such as pika
// with blocked_connection_timeout would otherwise drop its consumers during
// every alarm); one that publishes during the alarm hears it then.
void Session::on_alarm(bool active, const std::string& reason) {
    blocked_ = active;
    if (state_ != State::running || !client_has_capability("connection.blocked")) {
        if (!active) host_.resume_reading();
        return;
    }
    if (active && !blocked_sent_) {
        if (!published_) return;
        m::ConnectionBlocked b;
        b.reason = reason;
        amqp::write_method(out_, 0, b);
        blocked_sent_ = true;
    } else if (!active && blocked_sent_) {
        amqp::write_method(out_, 0, m::ConnectionUnblocked{});
        blocked_sent_ = false;
    }
    host_.request_flush();
    if (!active) host_.resume_reading();
}

void Session::note_publish() {
    const bool first = !published_;
    published_ = true;
    if (first && blocked_ && !blocked_sent_) on_alarm(true, broker_.alarm_reason());  // its first publish, during an alarm
    if (!store_paused_ && broker_.durability().backlogged()) {
        store_paused_ = true;
        broker_.pause_for_store(this);
    }
}

void Session::on_store_caught_up() {
    store_paused_ = false;
    if (!reading_paused()) host_.resume_reading();
}

bool Session::output_full() const { return out_.size() >= broker_.config().output_high_watermark; }

bool Session::output_over_limit() const { return out_.size() >= 4 * broker_.config().output_high_watermark; }

void Session::wrote_output() {
    if (!in_batch_) host_.request_flush();
}

void Session::mark_confirm_pending(Channel* channel) { confirm_pending_.push_back(channel); }

void Session::flush_confirms() {
    // A channel may close while its confirm is pending: look it up again.
    for (Channel* c : confirm_pending_)
        for (const auto& ch : channels_)
            if (ch.get() == c) c->flush_confirms();
    confirm_pending_.clear();
}

bool Session::client_has_capability(std::string_view name) const {
    const amqp::FieldValue* caps = client_properties_.find("capabilities");
    const amqp::FieldTable* t = caps ? caps->as_table() : nullptr;
    const amqp::FieldValue* v = t ? t->find(name) : nullptr;
    return v && v->as_bool().value_or(false);
}

void Session::own_exclusive_queue(const std::shared_ptr<Queue>& queue) {
    // A weak_ptr keeps the queue's memory (make_shared: one allocation with
    // its control block) until it goes: drop those of deleted queues as the
    // list doubles, or a connection that declares a reply queue per call
    // pins every queue it ever had (a million calls: 700 MiB).
    if (exclusive_queues_.size() >= exclusive_prune_at_) {
        std::erase_if(exclusive_queues_, [](const std::weak_ptr<Queue>& w) { return w.expired(); });
        exclusive_prune_at_ = std::max<size_t>(16, 2 * exclusive_queues_.size());
    }
    exclusive_queues_.push_back(queue);
}

size_t Session::on_bytes(std::string_view data) {
    if (state_ == State::closed) return data.size();
    size_t consumed = 0;
    in_batch_ = true;
    if (state_ == State::protocol_header) {
        if (data.size() < amqp::kProtocolHeader.size()) {
            in_batch_ = false;
            return 0;
        }
        if (data.substr(0, amqp::kProtocolHeader.size()) != amqp::kProtocolHeader) {
            // Not AMQP 0-9-1: answer with the header we speak, then close.
            out_.append(amqp::kProtocolHeader);
            state_ = State::closed;
            in_batch_ = false;
            host_.close_transport();
            return data.size();
        }
        consumed = amqp::kProtocolHeader.size();
        send_start();
    }
    while (state_ != State::closed && consumed < data.size() && !reading_paused() && !output_over_limit()) {
        amqp::FrameParse p = amqp::parse_frame(data.substr(consumed), frame_max_);
        if (p.status == amqp::FrameStatus::need_more) break;
        if (p.status != amqp::FrameStatus::ok) {
            const char* what = p.status == amqp::FrameStatus::too_large ? "frame larger than the negotiated frame_max"
                               : p.status == amqp::FrameStatus::bad_end ? "frame does not end with 0xCE"
                                                                        : "unknown frame type";
            connection_error(amqp_error(reply::frame_error, what));
            consumed = data.size();
            break;
        }
        consumed += p.consumed;
        handle_frame(p.frame.type, p.frame.channel, p.frame.payload);
    }
    broker_.stats().bytes_in += consumed;
    flush_confirms();
    in_batch_ = false;
    if (!out_.empty()) host_.request_flush();
    return consumed;
}

void Session::send_start() {
    m::ConnectionStart start;
    start.version_major = 0;
    start.version_minor = 9;
    start.server_properties = server_properties();
    // EXTERNAL only where a verified client certificate names the user.
    start.mechanisms = info_.cert_user.empty() ? "PLAIN AMQPLAIN" : "PLAIN AMQPLAIN EXTERNAL";
    start.locales = "en_US";
    amqp::write_method(out_, 0, start);
    state_ = State::start_ok;
}

void Session::on_heartbeat_due() {
    if (state_ == State::closed) return;
    amqp::write_heartbeat(out_);
    host_.request_flush();
}

void Session::on_writable() {
    for (const auto& ch : channels_)
        if (ch) ch->resume_consumers();
}

Channel* Session::find_channel(uint16_t id) const {
    return id < channels_.size() ? channels_[id].get() : nullptr;
}

void Session::open_channel(uint16_t id) {
    if (channels_.size() <= id) channels_.resize(size_t{id} + 1);
    channels_[id] = std::make_unique<Channel>(*this, *vhost_, id);
    ++broker_.stats().channels_opened;
    amqp::write_method(out_, id, m::ChannelOpenOk{});
}

void Session::remove_channel(uint16_t id) {
    if (id >= channels_.size() || !channels_[id]) return;
    channels_[id]->release();
    channels_[id].reset();
    ++broker_.stats().channels_closed;
    while (!channels_.empty() && !channels_.back()) channels_.pop_back();
}

void Session::handle_frame(uint8_t type, uint16_t channel, std::string_view payload) {
    if (type == amqp::kFrameHeartbeat) {
        if (channel != 0) connection_error(amqp_error(reply::frame_error, "heartbeat frame on a non-zero channel"));
        return;
    }
    if (channel == 0) {
        if (type != amqp::kFrameMethod) {
            connection_error(amqp_error(reply::unexpected_frame, "content frame on channel 0"));
            return;
        }
        handle_connection_method(payload);
        return;
    }
    if (state_ == State::closing) return;  // only connection.close-ok matters now
    if (state_ != State::running) {
        connection_error(amqp_error(reply::channel_error, "channel frame before connection.open"));
        return;
    }
    if (channel > channel_max_) {  // RabbitMQ: 530, as its Java client's tests expect
        connection_error(amqp_error(reply::not_allowed,
                                    "channel " + std::to_string(channel) + " above negotiated channel_max " +
                                        std::to_string(channel_max_)));
        return;
    }
    Channel* ch = find_channel(channel);
    uint32_t key = type == amqp::kFrameMethod ? amqp::peek_method_key(payload) : 0;
    if (key == m::ChannelOpen::key || key == m::ChannelClose::key || key == m::ChannelCloseOk::key) {
        if (Status st = check_peeked(payload, amqp::method_name(key))) {
            connection_error(*st);
            return;
        }
    }
    if (!ch) {
        if (key == m::ChannelOpen::key) {
            open_channel(channel);
        } else if (key != m::ChannelCloseOk::key) {
            AmqpError e = amqp_error(reply::channel_error, "expected 'channel.open' on channel " + std::to_string(channel));
            e.method = key;
            connection_error(e);
        }
        return;
    }
    if (ch->closing()) {  // we sent channel.close: wait for close-ok
        if (key == m::ChannelCloseOk::key) {
            remove_channel(channel);
        } else if (key == m::ChannelClose::key) {
            amqp::write_method(out_, channel, m::ChannelCloseOk{});
            remove_channel(channel);
        }
        return;
    }
    Status st;
    if (type == amqp::kFrameMethod) {
        if (key == m::ChannelOpen::key) {
            connection_error(amqp_error(reply::channel_error,
                                        "second 'channel.open' seen on channel " + std::to_string(channel)));
            return;
        }
        if (key == m::ChannelClose::key) {
            remove_channel(channel);
            amqp::write_method(out_, channel, m::ChannelCloseOk{});
            return;
        }
        if (key == m::ChannelCloseOk::key) return;  // stray: nothing to do
        st = ch->on_method(payload);
    } else if (type == amqp::kFrameHeader) {
        st = ch->on_header(payload);
    } else {
        st = ch->on_body(payload);
    }
    if (st) report(channel, *st);
}

void Session::report(uint16_t channel, const AmqpError& error) {
    if (is_hard_error(error.code)) {
        connection_error(error);
    } else if (Channel* still = find_channel(channel)) {
        still->start_close(error);
    }
}

void Session::read_done() {
    read_wait_ = false;
    if (tearing_down_ || state_ == State::closed) return;
    host_.request_flush();
    if (!reading_paused()) host_.resume_reading();
}

void Session::handle_connection_method(std::string_view payload) {
    if (payload.size() < 4) {
        connection_error(amqp_error(reply::frame_error, "method frame shorter than its class and method ids"));
        return;
    }
    uint32_t key = amqp::peek_method_key(payload);
    if (state_ == State::closing) {
        if (key == m::ConnectionCloseOk::key) {
            state_ = State::closed;
            host_.close_transport();
        } else if (key == m::ConnectionClose::key) {
            amqp::write_method(out_, 0, m::ConnectionCloseOk{});
            state_ = State::closed;
            host_.close_transport();
        }
        return;
    }
    if (key == m::ConnectionClose::key) {
        if (Status st = check_peeked(payload, "connection.close")) {
            connection_error(*st);
            return;
        }
        teardown();
        amqp::write_method(out_, 0, m::ConnectionCloseOk{});
        state_ = State::closed;
        host_.close_transport();
        return;
    }
    Status st;
    if (state_ == State::start_ok && key == m::ConnectionStartOk::key) {
        st = handle_start_ok(payload);
    } else if (state_ == State::tune_ok && key == m::ConnectionTuneOk::key) {
        st = handle_tune_ok(payload);
    } else if (state_ == State::open && key == m::ConnectionOpen::key) {
        st = handle_open(payload);
    } else if (state_ == State::running && key == m::ConnectionUpdateSecret::key) {
        amqp::write_method(out_, 0, m::ConnectionUpdateSecretOk{});
    } else if (state_ == State::running &&
               (key == m::ConnectionBlocked::key || key == m::ConnectionUnblocked::key)) {
        // Clients do not send these to servers; ignore as RabbitMQ does.
    } else if ((key >> 16) != m::ConnectionStart::class_id && !amqp::method_name(key).empty()) {
        st = amqp_error(reply::channel_error, "'" + std::string(amqp::method_name(key)) +
                                                  "' is not a connection method and cannot use channel 0");
    } else if (amqp::method_name(key).empty()) {
        st = amqp_error(reply::not_implemented, "unknown method " + std::to_string(key >> 16) + "/" +
                                                    std::to_string(key & 0xffff) + " on channel 0");
    } else {
        st = amqp_error(reply::command_invalid,
                        "unexpected '" + std::string(amqp::method_name(key)) + "' on channel 0");
    }
    if (st) {
        st->method = key;
        connection_error(*st);
    }
}

Status Session::handle_start_ok(std::string_view payload) {
    amqp::Method method;
    if (Status st = decode_error(amqp::decode_method(payload, method), payload, "connection.start-ok")) return st;
    auto& ok = std::get<m::ConnectionStartOk>(method);
    client_properties_ = ok.client_properties;
    std::string user, password;
    bool parsed = false;
    const bool external = ok.mechanism == "EXTERNAL" && !info_.cert_user.empty();  // the certificate vouches
    if (ok.mechanism == "PLAIN") parsed = parse_plain(ok.response, user, password);
    else if (ok.mechanism == "AMQPLAIN") parsed = parse_amqplain(ok.response, user, password);
    else if (external) {
        user = info_.cert_user;
        parsed = true;
    } else
        return amqp_error(reply::access_refused, "unsupported authentication mechanism '" +
                                                     std::string(ok.mechanism) + "'; use PLAIN or AMQPLAIN");
    Broker::Login login = !parsed    ? Broker::Login::bad_credentials
                          : external ? broker_.login_external(user, info_.loopback)
                                     : broker_.login(user, password, info_.loopback);
    if (login != Broker::Login::ok) {
        std::string text = login == Broker::Login::loopback_only
                               ? "user '" + user + "' can only connect via localhost"
                               : "Login was refused using authentication mechanism " + std::string(ok.mechanism) +
                                     ". For details see the broker logfile.";
        if (!client_has_capability("authentication_failure_close")) {
            state_ = State::closed;  // as RabbitMQ: such clients just see the socket close
            host_.close_transport();
            return std::nullopt;
        }
        return amqp_error(reply::access_refused, text);
    }
    user_ = user;
    m::ConnectionTune tune;
    tune.channel_max = broker_.config().channel_max;
    tune.frame_max = broker_.config().frame_max;
    tune.heartbeat = broker_.config().heartbeat;
    amqp::write_method(out_, 0, tune);
    state_ = State::tune_ok;
    return std::nullopt;
}

Status Session::handle_tune_ok(std::string_view payload) {
    amqp::Method method;
    if (Status st = decode_error(amqp::decode_method(payload, method), payload, "connection.tune-ok")) return st;
    auto& ok = std::get<m::ConnectionTuneOk>(method);
    const BrokerConfig& cfg = broker_.config();
    if (ok.frame_max != 0 && ok.frame_max < amqp::kFrameMinSize)
        return amqp_error(reply::not_allowed, "frame_max=" + std::to_string(ok.frame_max) +
                                                  " < " + std::to_string(amqp::kFrameMinSize) + " min size");
    if (ok.frame_max > cfg.frame_max)
        return amqp_error(reply::not_allowed, "frame_max=" + std::to_string(ok.frame_max) + " > " +
                                                  std::to_string(cfg.frame_max) + " max size");
    if (ok.channel_max > cfg.channel_max)
        return amqp_error(reply::not_allowed, "channel_max=" + std::to_string(ok.channel_max) + " > " +
                                                  std::to_string(cfg.channel_max) + " max");
    frame_max_ = ok.frame_max == 0 ? cfg.frame_max : ok.frame_max;
    channel_max_ = ok.channel_max == 0 ? cfg.channel_max : ok.channel_max;
    heartbeat_ = ok.heartbeat;  // the client's answer wins, as in RabbitMQ
    host_.start_heartbeat(heartbeat_);
    state_ = State::open;
    return std::nullopt;
}

Status Session::handle_open(std::string_view payload) {
    amqp::Method method;
    if (Status st = decode_error(amqp::decode_method(payload, method), payload, "connection.open")) return st;
    auto& open = std::get<m::ConnectionOpen>(method);
    // RabbitMQ's connection_max: checked first, as RabbitMQ does, so the
    // client hears why.
    const uint32_t max_connections = broker_.config().max_connections;
    if (max_connections != 0 && broker_.open_connection_count() >= max_connections)
        return amqp_error(reply::not_allowed, "connection refused: node connection limit (" +
                                                  std::to_string(max_connections) + ") is reached");
    if (Status st = broker_.check_vhost_open(user_, open.virtual_host)) return st;
    vhost_ = broker_.find_vhost(open.virtual_host);
    permissions_ = PermissionView(broker_.access_control(), user_, vhost_->name());
    amqp::write_method(out_, 0, m::ConnectionOpenOk{});
    state_ = State::running;
    broker_.connection_opened();
    holds_connection_slot_ = true;
    if (broker_.alarm_active()) on_alarm(true, broker_.alarm_reason());
    return std::nullopt;
}

void Session::connection_error(const AmqpError& error) {
    if (state_ == State::closing || state_ == State::closed) return;
    teardown();
    m::ConnectionClose close;
    std::string text = error.reply_text();
    close.reply_code = error.code;
    close.reply_text = text;
    close.failing_class_id = static_cast<uint16_t>(error.method >> 16);
    close.failing_method_id = static_cast<uint16_t>(error.method & 0xffff);
    amqp::write_method(out_, 0, close);
    state_ = State::closing;
    host_.close_transport();
    if (!in_batch_) host_.request_flush();
}

void Session::release_connection_slot() {
    if (!holds_connection_slot_) return;
    holds_connection_slot_ = false;
    broker_.connection_closed();
}

void Session::teardown() {
    tearing_down_ = true;  // channels that go now resume nothing (read_done)
    release_connection_slot();
    // Cancel every consumer first, so requeued messages go to consumers on
    // other connections rather than back to this one.
    for (const auto& ch : channels_)
        if (ch) ch->detach_consumers();
    for (uint16_t id = 0; id < channels_.size(); ++id)
        if (channels_[id]) remove_channel(id);
    channels_.clear();
    confirm_pending_.clear();
    for (auto& weak : exclusive_queues_)
        if (auto q = weak.lock(); q && !q->deleted() && vhost_) vhost_->delete_queue(q);
    exclusive_queues_.clear();
}

void Session::close_for_deleted_vhost(const std::string& reason) {
    connection_error(amqp_error(reply::connection_forced, reason));
    teardown();  // if it was closing already
    vhost_ = nullptr;
}

void Session::on_transport_closed() {
    if (state_ != State::closed) state_ = State::closed;
    teardown();
}

}  // namespace sluice::broker
