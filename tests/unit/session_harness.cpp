#include "tests/unit/session_harness.hpp"

#include <gtest/gtest.h>

#include <algorithm>

#include "net/amqp/wire.hpp"

namespace sluice::test {

namespace m = amqp::method;

amqp::FieldTable table(std::initializer_list<std::pair<std::string, amqp::FieldValue>> entries) {
    amqp::FieldTable t;
    for (const auto& [k, v] : entries) t.entries.emplace_back(k, v);
    return t;
}

uint32_t ServerFrame::key() const {
    if (type != amqp::kFrameMethod || !payload) return 0;
    return amqp::peek_method_key(*payload);
}

std::string ServerFrame::describe() const {
    std::string s;
    switch (type) {
        case 0: return "(no frame)";
        case amqp::kFrameMethod: {
            std::string_view name = amqp::method_name(key());
            s = name.empty() ? "unknown method " + std::to_string(key() >> 16) + "/" + std::to_string(key() & 0xffff)
                             : std::string(name);
            if (const auto* c = std::get_if<m::ChannelClose>(&method))
                s += " " + std::to_string(c->reply_code) + " '" + std::string(c->reply_text) + "'";
            if (const auto* c = std::get_if<m::ConnectionClose>(&method))
                s += " " + std::to_string(c->reply_code) + " '" + std::string(c->reply_text) + "'";
            if (has_content) s += " (+" + std::to_string(body.size()) + " body bytes)";
            break;
        }
        case amqp::kFrameHeader: s = "content header"; break;
        case amqp::kFrameBody: s = "content body"; break;
        case amqp::kFrameHeartbeat: s = "heartbeat"; break;
        default: s = "frame type " + std::to_string(type);
    }
    return s + " on channel " + std::to_string(channel);
}

TestClient::TestClient(broker::Broker& broker, ClientOptions options)
    : broker_(broker), options_(std::move(options)) {
    broker::ConnectionInfo info;
    info.peer = options_.loopback ? "127.0.0.1:40000" : "192.0.2.1:40000";
    info.loopback = options_.loopback;
    info.tls = !options_.cert_user.empty();
    info.cert_user = options_.cert_user;
    session_ = std::make_unique<broker::Session>(broker_, host_, std::move(info));
    frame_max_ = broker_.config().frame_max;
    host_.on_resume = [this] {
        if (input_.empty() || resuming_) return;
        resuming_ = true;
        input_.erase(0, session_->on_bytes(input_));
        resuming_ = false;
        after_send();
    };
}

TestClient::~TestClient() = default;

bool TestClient::handshake() {
    send_raw(amqp::kProtocolHeader);
    ServerFrame start = expect<m::ConnectionStart>(0);
    if (!start.is<m::ConnectionStart>()) return false;
    start_ = start;

    m::ConnectionStartOk ok;
    amqp::FieldTable caps;
    for (const std::string& c : options_.capabilities) caps.set(c, true);
    ok.client_properties.set("product", "sluice-session-harness");
    ok.client_properties.set("capabilities", std::move(caps));
    ok.mechanism = options_.mechanism;
    std::string response;
    if (options_.mechanism == "AMQPLAIN") {
        amqp::FieldTable t;
        t.set("LOGIN", options_.user);
        t.set("PASSWORD", options_.password);
        amqp::encode_table(response, t);
        response.erase(0, 4);  // AMQPLAIN: the table without its length prefix
    } else {
        response.push_back('\0');
        response += options_.user;
        response.push_back('\0');
        response += options_.password;
    }
    ok.response = response;
    ok.locale = "en_US";
    send(0, ok);
    ServerFrame tune = next();
    if (!tune.is<m::ConnectionTune>()) {
        // Not a failure here: a test of refused logins inspects what came instead.
        if (tune.valid()) inbox_.push_front(std::move(tune));
        return false;
    }
    tune_ = tune.get<m::ConnectionTune>();

    m::ConnectionTuneOk tok;
    tok.channel_max = options_.channel_max.value_or(tune_.channel_max);
    tok.frame_max = options_.frame_max.value_or(tune_.frame_max);
    tok.heartbeat = options_.heartbeat;
    send(0, tok);
    if (pending() != 0) return false;  // e.g. connection.close for a bad tune-ok
    frame_max_ = tok.frame_max == 0 ? tune_.frame_max : tok.frame_max;

    m::ConnectionOpen open;
    open.virtual_host = options_.vhost;
    send(0, open);
    ServerFrame open_ok = next();
    if (!open_ok.is<m::ConnectionOpenOk>()) {
        if (open_ok.valid()) inbox_.push_front(std::move(open_ok));
        return false;
    }
    return true;
}

void TestClient::send_raw(std::string_view bytes) {
    input_.append(bytes);
    size_t consumed = session_->on_bytes(input_);
    input_.erase(0, consumed);
    after_send();
}

void TestClient::send_raw_or_batch(std::string_view bytes) {
    if (batching_) batch_.append(bytes);
    else send_raw(bytes);
}

void TestClient::batch(const std::function<void()>& fn) {
    batching_ = true;
    fn();
    batching_ = false;
    std::string bytes;
    bytes.swap(batch_);
    send_raw(bytes);
}

void TestClient::after_send() {
    if (auto_drain_) drain();
}

void TestClient::send_frame(uint8_t type, uint16_t channel, std::string_view payload) {
    std::string out;
    amqp::write_frame(out, type, channel, payload);
    send_raw_or_batch(out);
}

void TestClient::publish(uint16_t channel, std::string_view exchange, std::string_view routing_key,
                         std::string_view body, const amqp::BasicProperties& props, bool mandatory) {
    std::string out;
    m::BasicPublish p;
    p.exchange = exchange;
    p.routing_key = routing_key;
    p.mandatory = mandatory;
    amqp::write_method(out, channel, p);
    std::string raw;
    amqp::encode_properties(raw, props);
    size_t h = amqp::begin_frame(out, amqp::kFrameHeader, channel);
    amqp::encode_content_header(out, m::BasicPublish::class_id, body.size(), raw);
    amqp::end_frame(out, h);
    const size_t chunk = frame_max_ - amqp::kFrameOverhead;
    while (!body.empty()) {
        size_t n = std::min(body.size(), chunk);
        amqp::write_frame(out, amqp::kFrameBody, channel, body.substr(0, n));
        body.remove_prefix(n);
    }
    send_raw_or_batch(out);
}

size_t TestClient::drain() {
    std::string& out = session_->output();
    received_.append(out);
    out.clear();
    size_t added = 0;
    size_t pos = 0;
    auto finish_assembly = [&] {
        inbox_.push_back(std::move(*assembling_));
        assembling_.reset();
        ++added;
    };
    while (pos < received_.size()) {
        amqp::FrameParse p = amqp::parse_frame(std::string_view(received_).substr(pos), 0);
        if (p.status == amqp::FrameStatus::need_more) break;
        if (p.status != amqp::FrameStatus::ok) {
            ADD_FAILURE() << "the session wrote a malformed frame at output offset " << pos;
            received_.clear();
            return added;
        }
        if (frame_max_ != 0 && p.consumed > frame_max_)
            ADD_FAILURE() << "the session wrote a " << p.consumed << "-byte frame (type " << int(p.frame.type)
                          << ") above the negotiated frame_max " << frame_max_;
        pos += p.consumed;
        ServerFrame f;
        f.type = p.frame.type;
        f.channel = p.frame.channel;
        f.payload = std::make_shared<const std::string>(p.frame.payload);

        if (assembling_ && f.channel == assembling_->channel) {
            ServerFrame& a = *assembling_;
            if (f.type == amqp::kFrameHeader && a.raw_properties.empty() && a.content_class == 0) {
                amqp::ContentHeader h;
                if (!amqp::decode_content_header(*f.payload, h)) {
                    ADD_FAILURE() << "malformed content header after " << a.describe();
                } else {
                    a.content_class = h.class_id;
                    a.body_size = h.body_size;
                    a.raw_properties.assign(h.properties);
                    if (!amqp::decode_properties(a.raw_properties, a.properties))
                        ADD_FAILURE() << "undecodable properties after " << a.describe();
                }
                if (a.body_size == 0) finish_assembly();
                continue;
            }
            if (f.type == amqp::kFrameBody && a.content_class != 0) {
                a.body.append(*f.payload);
                a.body_frame_sizes.push_back(f.payload->size());
                if (a.body.size() > a.body_size)
                    ADD_FAILURE() << "body frames exceed the header's body size for " << a.describe();
                if (a.body.size() >= a.body_size) finish_assembly();
                continue;
            }
            ADD_FAILURE() << "content of " << a.describe() << " interrupted by " << f.describe();
            finish_assembly();
        }
        if (f.type == amqp::kFrameMethod) {
            f.decode_error = amqp::decode_method(*f.payload, f.method);
            if (f.decode_error != amqp::DecodeError::none)
                ADD_FAILURE() << "the session wrote an undecodable method " << f.describe();
            if (amqp::method_has_content(f.key())) {
                f.has_content = true;
                assembling_ = std::move(f);
                continue;
            }
        }
        inbox_.push_back(std::move(f));
        ++added;
    }
    received_.erase(0, pos);
    return added;
}

ServerFrame TestClient::next() {
    drain();
    if (inbox_.empty()) return ServerFrame{};
    ServerFrame f = std::move(inbox_.front());
    inbox_.pop_front();
    return f;
}

void TestClient::check_expected(const ServerFrame& f, uint32_t key, std::string_view name, uint16_t channel) {
    if (!f.valid()) {
        ADD_FAILURE() << "expected " << name << " on channel " << channel << ", got nothing";
        return;
    }
    if (f.key() != key || f.channel != channel)
        ADD_FAILURE() << "expected " << name << " on channel " << channel << ", got " << f.describe()
                      << (inbox_.empty() ? "" : "; then: " + describe_pending());
}

std::string TestClient::describe_pending() const {
    std::string s;
    for (const ServerFrame& f : inbox_) {
        if (!s.empty()) s += ", ";
        s += f.describe();
    }
    return s.empty() ? "(nothing)" : s;
}

ServerFrame TestClient::expect_channel_close(uint16_t channel, uint16_t code) {
    ServerFrame f = expect<m::ChannelClose>(channel);
    if (f.is<m::ChannelClose>()) {
        EXPECT_EQ(f.get<m::ChannelClose>().reply_code, code) << f.describe();
        send(channel, m::ChannelCloseOk{});
    }
    return f;
}

ServerFrame TestClient::expect_connection_close(uint16_t code) {
    ServerFrame f = expect<m::ConnectionClose>(0);
    if (f.is<m::ConnectionClose>()) {
        EXPECT_EQ(f.get<m::ConnectionClose>().reply_code, code) << f.describe();
    }
    return f;
}

bool TestClient::open_channel(uint16_t channel) {
    send(channel, m::ChannelOpen{});
    return expect<m::ChannelOpenOk>(channel).is<m::ChannelOpenOk>();
}

bool TestClient::close_channel(uint16_t channel) {
    m::ChannelClose c;
    c.reply_code = 200;
    c.reply_text = "bye";
    send(channel, c);
    return expect<m::ChannelCloseOk>(channel).is<m::ChannelCloseOk>();
}

std::string TestClient::declare_queue(uint16_t channel, std::string_view name, const QueueOpts& o) {
    m::QueueDeclare d;
    d.queue = name;
    d.passive = o.passive;
    d.durable = o.durable;
    d.exclusive = o.exclusive;
    d.auto_delete = o.auto_delete;
    d.arguments = o.arguments;
    send(channel, d);
    ServerFrame f = expect<m::QueueDeclareOk>(channel);
    return f.is<m::QueueDeclareOk>() ? std::string(f.get<m::QueueDeclareOk>().queue) : std::string();
}

bool TestClient::declare_exchange(uint16_t channel, std::string_view name, std::string_view type, bool durable,
                                  bool auto_delete, bool internal) {
    m::ExchangeDeclare d;
    d.exchange = name;
    d.type = type;
    d.durable = durable;
    d.auto_delete = auto_delete;
    d.internal = internal;
    send(channel, d);
    return expect<m::ExchangeDeclareOk>(channel).is<m::ExchangeDeclareOk>();
}

bool TestClient::bind_queue(uint16_t channel, std::string_view queue, std::string_view exchange,
                            std::string_view key, const amqp::FieldTable& args) {
    m::QueueBind b;
    b.queue = queue;
    b.exchange = exchange;
    b.routing_key = key;
    b.arguments = args;
    send(channel, b);
    return expect<m::QueueBindOk>(channel).is<m::QueueBindOk>();
}

std::string TestClient::consume(uint16_t channel, std::string_view queue, bool no_ack, std::string_view tag,
                                bool exclusive) {
    m::BasicConsume c;
    c.queue = queue;
    c.no_ack = no_ack;
    c.consumer_tag = tag;
    c.exclusive = exclusive;
    send(channel, c);
    ServerFrame f = expect<m::BasicConsumeOk>(channel);
    return f.is<m::BasicConsumeOk>() ? std::string(f.get<m::BasicConsumeOk>().consumer_tag) : std::string();
}

bool TestClient::qos(uint16_t channel, uint16_t prefetch_count, bool global) {
    m::BasicQos q;
    q.prefetch_count = prefetch_count;
    q.global = global;
    send(channel, q);
    return expect<m::BasicQosOk>(channel).is<m::BasicQosOk>();
}

bool TestClient::confirm_select(uint16_t channel) {
    send(channel, m::ConfirmSelect{});
    return expect<m::ConfirmSelectOk>(channel).is<m::ConfirmSelectOk>();
}

void TestClient::ack(uint16_t channel, uint64_t tag, bool multiple) {
    m::BasicAck a;
    a.delivery_tag = tag;
    a.multiple = multiple;
    send(channel, a);
}

void TestClient::nack(uint16_t channel, uint64_t tag, bool multiple, bool requeue) {
    m::BasicNack n;
    n.delivery_tag = tag;
    n.multiple = multiple;
    n.requeue = requeue;
    send(channel, n);
}

void TestClient::reject(uint16_t channel, uint64_t tag, bool requeue) {
    m::BasicReject r;
    r.delivery_tag = tag;
    r.requeue = requeue;
    send(channel, r);
}

ServerFrame TestClient::get(uint16_t channel, std::string_view queue, bool no_ack) {
    m::BasicGet g;
    g.queue = queue;
    g.no_ack = no_ack;
    send(channel, g);
    ServerFrame f = next();
    if (!f.is<m::BasicGetOk>() && !f.is<m::BasicGetEmpty>())
        ADD_FAILURE() << "expected basic.get-ok or get-empty, got " << f.describe();
    return f;
}

}  // namespace sluice::test
