#include "net/shovel.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <algorithm>
#include <ctime>
#include <iostream>
#include <tuple>

#include "net/amqp/properties.hpp"

namespace sluice::net {

namespace asio = boost::asio;
namespace m = amqp::method;

namespace {

constexpr uint16_t kNotFound = 404;

std::string local_time_now() {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

ClientEndpoint endpoint_for(const AmqpUri& uri, const LocalBroker& local, const std::string& name) {
    ClientEndpoint e;
    const bool here = uri.host.empty();
    e.host = here ? local.host : uri.host;
    e.port = here ? local.port : uri.port;
    e.user = uri.user.value_or(here ? local.default_user : "guest");
    e.password = uri.password.value_or(here ? local.default_password : "guest");
    e.vhost = uri.vhost;
    e.heartbeat_s = uri.heartbeat_s;
    e.connection_name = "Shovel " + name;
    return e;
}

std::string channel_close_text(std::string_view args) {
    m::ChannelClose c;
    amqp::decode_arguments(args, c);
    return std::to_string(c.reply_code) + " " + std::string(c.reply_text);
}

uint16_t channel_close_code(std::string_view args) {
    m::ChannelClose c;
    amqp::decode_arguments(args, c);
    return c.reply_code;
}

}  // namespace

struct Shovel::Timer {
    explicit Timer(asio::io_context& io) : t(io) {}
    asio::steady_timer t;
};

// One side of the shovel: its connection and the setup steps of channel 1.
struct Shovel::Link final : AmqpClientConnection::Observer {
    enum class Step { opening, passive_declare, reopening, declare, bind, exchange_check, confirm_select, ready, qos,
                      consume, running };

    Link(Shovel& s, bool source) : shovel(s), source(source) {}
    ~Link() override { close(); }

    Shovel& shovel;
    const bool source;
    std::shared_ptr<AmqpClientConnection> conn;
    Step step = Step::opening;
    std::string queue;           // the queue consumed from / published to
    std::string consumer_tag;    // the source's, once consuming
    uint32_t message_count = 0;  // the source queue's length at its declare

    void close() {
        if (conn) conn->close();
        conn.reset();
    }
    bool ready() const { return step == Step::ready || step == Step::qos || step == Step::consume || step == Step::running; }

    const ShovelDefinition& def() const { return shovel.def_; }

    void declare(bool passive) {
        m::QueueDeclare d;
        d.queue = queue;
        d.passive = passive;
        d.durable = true;
        if (source && def().src_is_exchange) {
            d.durable = false;
            d.exclusive = true;
        }
        const auto& args = source ? def().src_queue_args : def().dest_queue_args;
        if (!passive && args) d.arguments = *args;
        step = passive ? Step::passive_declare : Step::declare;
        conn->send(d);
    }

    // After channel.open-ok (or after the queue is in place).
    void begin() {
        if (source) {
            queue = def().src_is_exchange ? std::string() : def().src_queue;
            return declare(!def().src_is_exchange && (!def().src_queue_args || def().src_predeclared));
        }
        if (!def().dest_queue.empty()) {
            queue = def().dest_queue;
            return declare(!def().dest_queue_args || def().dest_predeclared);
        }
        if (def().dest_exchange && !def().dest_exchange->empty()) {
            m::ExchangeDeclare x;
            x.exchange = *def().dest_exchange;
            x.passive = true;
            step = Step::exchange_check;
            return conn->send(x);
        }
        after_destination_checked();
    }

    void after_destination_checked() {
        if (def().ack_mode == AckMode::on_confirm) {
            step = Step::confirm_select;
            return conn->send(m::ConfirmSelect{});
        }
        set_ready();
    }

    void set_ready() {
        step = Step::ready;
        shovel.link_ready();
    }

    void start_consuming(uint16_t prefetch) {
        step = Step::qos;
        conn->send(m::BasicQos{0, prefetch, false});
    }

    void channel_method(uint32_t key, std::string_view args) override {
        switch (key) {
        case m::ChannelOpenOk::key:
            if (step == Step::reopening) return declare(false);
            return begin();
        case m::ChannelClose::key:
            if (step == Step::passive_declare && channel_close_code(args) == kNotFound &&
                !(source ? def().src_predeclared : def().dest_predeclared)) {
                step = Step::reopening;  // the queue does not exist: declare it
                return conn->open_channel();
            }
            if (step == Step::exchange_check && channel_close_code(args) == kNotFound)
                return shovel.link_failed("destination exchange '" + *def().dest_exchange + "' does not exist");
            return shovel.link_failed(std::string(source ? "source" : "destination") +
                                      " channel closed: " + channel_close_text(args));
        case m::QueueDeclareOk::key: {
            m::QueueDeclareOk ok;
            if (amqp::decode_arguments(args, ok) != amqp::DecodeError::none)
                return shovel.link_failed("malformed queue.declare-ok");
            queue.assign(ok.queue);
            message_count = ok.message_count;
            if (source && def().src_is_exchange) {
                m::QueueBind b;
                b.queue = queue;
                b.exchange = def().src_exchange;
                b.routing_key = def().src_exchange_key;
                step = Step::bind;
                return conn->send(b);
            }
            return source ? set_ready() : after_destination_checked();
        }
        case m::QueueBindOk::key:
            return set_ready();
        case m::ExchangeDeclareOk::key:
            return after_destination_checked();
        case m::ConfirmSelectOk::key:
            return set_ready();
        case m::BasicQosOk::key: {
            m::BasicConsume c;
            c.queue = queue;
            c.no_ack = def().ack_mode == AckMode::no_ack;
            if (def().src_consumer_args) c.arguments = *def().src_consumer_args;
            step = Step::consume;
            return conn->send(c);
        }
        case m::BasicConsumeOk::key: {
            m::BasicConsumeOk ok;
            amqp::decode_arguments(args, ok);
            consumer_tag.assign(ok.consumer_tag);
            step = Step::running;
            return shovel.link_ready();
        }
        case m::BasicCancel::key:
            return shovel.link_failed("the source broker cancelled the consumer (queue deleted?)");
        case m::BasicAck::key:
        case m::BasicNack::key: {
            if (source) return;
            m::BasicNack n;  // basic.ack's fields are a prefix of basic.nack's
            if (key == m::BasicAck::key) {
                m::BasicAck a;
                amqp::decode_arguments(args, a);
                n.delivery_tag = a.delivery_tag;
                n.multiple = a.multiple;
            } else {
                amqp::decode_arguments(args, n);
            }
            return shovel.settle(n.delivery_tag, n.multiple, key == m::BasicNack::key);
        }
        default:
            return;
        }
    }

    void delivery(ClientDelivery&& d) override {
        if (source && step == Step::running) shovel.forward(std::move(d));
    }

    void blocked(bool on, std::string_view reason) override {
        if (!source) shovel.link_blocked(on, reason);
    }

    void closed(const std::string& reason) override {
        conn.reset();
        shovel.link_failed(std::string(source ? "source: " : "destination: ") + reason);
    }
};

Shovel::Shovel(asio::io_context& io, const LocalBroker& local, std::string vhost, std::string name,
               ShovelDefinition definition, std::function<void()> on_complete)
    : io_(io), local_(local), def_(std::move(definition)), on_complete_(std::move(on_complete)),
      retry_(std::make_unique<Timer>(io)) {
    status_.vhost = std::move(vhost);
    status_.name = std::move(name);
    status_.definition = &def_;
    status_.timestamp = local_time_now();
}

Shovel::~Shovel() { stop(); }

void Shovel::log(std::string_view what) const {
    std::cerr << "sluiced: shovel '" << status_.name << "' in vhost '" << status_.vhost << "': " << what << std::endl;
}

void Shovel::set_state(std::string state, std::string reason) {
    if (state != "starting" && (state != status_.state || reason != status_.reason))
        log(reason.empty() ? state : state + ": " + reason);
    status_.blocked_status = "running";
    status_.state = std::move(state);
    status_.reason = std::move(reason);
    status_.timestamp = local_time_now();
}

void Shovel::start() {
    if (stopped_) return;
    connect();
}

void Shovel::stop() {
    stopped_ = true;
    retry_->t.cancel();
    if (src_) src_->close();
    if (dest_) dest_->close();
}

void Shovel::restart() {
    if (stopped_ || completing_) return;
    retry_->t.cancel();
    if (src_) src_->close();
    if (dest_) dest_->close();
    connect();
}

void Shovel::connect() {
    set_state("starting");
    consuming_ = false;
    publish_seq_ = 0;
    in_flight_.clear();
    const AmqpUri& src_uri = def_.src_uris[attempt_ % def_.src_uris.size()];
    const AmqpUri& dest_uri = def_.dest_uris[attempt_ % def_.dest_uris.size()];
    ++attempt_;
    status_.src_uri = src_uri.redacted();
    status_.dest_uri = dest_uri.redacted();
    src_ = std::make_unique<Link>(*this, true);
    dest_ = std::make_unique<Link>(*this, false);
    dest_->conn = AmqpClientConnection::create(io_, endpoint_for(dest_uri, local_, status_.name), *dest_);
    src_->conn = AmqpClientConnection::create(io_, endpoint_for(src_uri, local_, status_.name), *src_);
    dest_->conn->start();
    src_->conn->start();
}

void Shovel::link_ready() {
    if (stopped_ || !src_ || !dest_ || !src_->ready() || !dest_->ready()) return;
    if (src_->step == Link::Step::running) {
        set_state("running");
        return;
    }
    if (src_->step != Link::Step::ready || consuming_) return;
    consuming_ = true;
    uint64_t prefetch = def_.prefetch_count;
    if (def_.delete_after != ShovelDefinition::DeleteAfter::never) {
        if (!limit_known_) {
            // The limit counts from the shovel's first start, across restarts.
            limited_ = true;
            limit_known_ = true;
            remaining_ = def_.delete_after == ShovelDefinition::DeleteAfter::count ? def_.delete_after_count
                                                                                  : src_->message_count;
        }
        if (remaining_ == 0) return check_complete();
        // No more deliveries in flight than are still to move.
        prefetch = std::min<uint64_t>(prefetch, remaining_);
    }
    src_->start_consuming(static_cast<uint16_t>(std::min<uint64_t>(prefetch, 65535)));
}

void Shovel::link_failed(const std::string& reason) {
    if (stopped_ || completing_) return;
    // Both links go: the source requeues what it delivered and was not acked.
    if (src_) src_->close();
    if (dest_) dest_->close();
    // Published but not confirmed: the source delivers them again, and they
    // count again against a src-delete-after limit.
    if (limited_) remaining_ += in_flight_.size();
    in_flight_.clear();
    consuming_ = false;
    set_state("terminated", reason);
    if (def_.reconnect_delay_s <= 0) return;
    retry_->t.expires_after(std::chrono::milliseconds(static_cast<int64_t>(def_.reconnect_delay_s * 1000)));
    retry_->t.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (!ec && !self->stopped_) self->connect();
    });
}

void Shovel::link_blocked(bool on, std::string_view reason) {
    const char* now = on ? "blocked" : "running";
    if (status_.blocked_status == now) return;
    status_.blocked_status = now;
    log(on ? "the destination blocks publishing (" + std::string(reason) + ")" : "the destination unblocked publishing");
}

std::string Shovel::publish_properties(const std::string& raw) const {
    const amqp::BasicProperties& over = def_.dest_publish_properties;
    const bool overwrite = over != amqp::BasicProperties{};
    if (!def_.add_forward_headers && !def_.add_timestamp_header && !overwrite) return raw;
    amqp::BasicProperties p;
    if (!amqp::decode_properties(raw, p)) return raw;  // passed on untouched
    if (overwrite) {
        using P = amqp::BasicProperties;  // every property but headers, which cannot be set this way
        static constexpr auto kFields = std::make_tuple(
            &P::content_type, &P::content_encoding, &P::delivery_mode, &P::priority, &P::correlation_id, &P::reply_to,
            &P::expiration, &P::message_id, &P::timestamp, &P::type, &P::user_id, &P::app_id, &P::cluster_id);
        std::apply([&](auto... field) { ((over.*field ? void(p.*field = over.*field) : void()), ...); }, kFields);
    }
    amqp::FieldTable headers = p.headers.value_or(amqp::FieldTable{});
    if (def_.add_forward_headers) {
        amqp::FieldTable t;
        auto put = [&t](std::string key, const std::string& value) { t.set(std::move(key), value); };
        put("shovelled-by", local_.node);
        put("shovel-type", "dynamic");
        put("shovel-name", status_.name);
        put("shovel-vhost", status_.vhost);
        put("src-uri", status_.src_uri);
        if (def_.src_is_exchange) {
            put("src-exchange", def_.src_exchange);
            put("src-exchange-key", def_.src_exchange_key);
        } else {
            put("src-queue", def_.src_queue);
        }
        put("dest-uri", status_.dest_uri);
        if (!def_.dest_queue.empty()) put("dest-queue", def_.dest_queue);
        if (def_.dest_exchange) put("dest-exchange", *def_.dest_exchange);
        if (def_.dest_exchange_key) put("dest-exchange-key", *def_.dest_exchange_key);
        // Prepended to the hops it already made (RabbitMQ's x-shovelled is a list).
        amqp::FieldArray hops{amqp::FieldValue(std::move(t))};
        if (const amqp::FieldValue* before = headers.find("x-shovelled"))
            if (const auto* a = std::get_if<amqp::FieldArray>(&before->v)) hops.insert(hops.end(), a->begin(), a->end());
        headers.set("x-shovelled", std::move(hops));
    }
    if (def_.add_timestamp_header)
        headers.set("x-shovelled-timestamp", amqp::Timestamp{static_cast<uint64_t>(std::time(nullptr))});
    if (def_.add_forward_headers || def_.add_timestamp_header) p.headers = std::move(headers);
    std::string out;
    amqp::encode_properties(out, p);
    return out;
}

void Shovel::forward(ClientDelivery&& d) {
    if (!dest_ || !dest_->conn || !src_ || !src_->conn) return;
    if (limited_) {
        // Past the limit: left unacked, the source requeues it when the link
        // closes (without acks it is already gone from the source: pass it on).
        if (remaining_ == 0 && def_.ack_mode != AckMode::no_ack) return;
        if (remaining_ > 0) --remaining_;
    }
    std::string_view exchange = d.exchange, routing_key = d.routing_key;
    if (!def_.dest_queue.empty()) {
        exchange = "";
        routing_key = dest_->queue;
    } else {
        if (def_.dest_exchange) exchange = *def_.dest_exchange;
        if (def_.dest_exchange_key) routing_key = *def_.dest_exchange_key;
    }
    dest_->conn->publish(exchange, routing_key, publish_properties(d.properties), d.body);
    ++status_.forwarded;
    switch (def_.ack_mode) {
    case AckMode::on_confirm:
        in_flight_.emplace(++publish_seq_, d.delivery_tag);
        break;
    case AckMode::on_publish:
        src_->conn->send(m::BasicAck{d.delivery_tag, false});
        break;
    case AckMode::no_ack:
        break;
    }
    if (limited_ && remaining_ == 0 && !completing_) {
        // Enough: stop the deliveries (those already sent stay unacked and
        // go back to the queue when the link closes).
        src_->conn->send(m::BasicCancel{src_->consumer_tag, false});
        check_complete();
    }
}

void Shovel::settle(uint64_t seq, bool multiple, bool nack) {
    if (!src_ || !src_->conn) return;
    std::vector<uint64_t> tags;
    auto end = multiple ? in_flight_.upper_bound(seq) : in_flight_.find(seq);
    auto begin = multiple ? in_flight_.begin() : end;
    if (!multiple) {
        if (end == in_flight_.end()) return;
        ++end;
    }
    for (auto it = begin; it != end; ++it) tags.push_back(it->second);
    in_flight_.erase(begin, end);
    if (nack) {
        // Not taken by the destination: back to the source queue.
        for (uint64_t tag : tags) src_->conn->send(m::BasicNack{tag, false, true});
        if (limited_) remaining_ += tags.size();
    } else {
        ack_source(tags);
    }
    check_complete();
}

void Shovel::ack_source(std::vector<uint64_t>& tags) {
    if (tags.empty()) return;
    std::sort(tags.begin(), tags.end());
    // Source tags grow with the destination's sequence: when every tag up to
    // the highest confirmed one is settled, one multiple ack covers them.
    const uint64_t oldest_unconfirmed = in_flight_.empty() ? UINT64_MAX : in_flight_.begin()->second;
    if (tags.back() < oldest_unconfirmed) {
        src_->conn->send(m::BasicAck{tags.back(), tags.size() > 1});
        return;
    }
    for (uint64_t tag : tags) src_->conn->send(m::BasicAck{tag, false});
}

void Shovel::check_complete() {
    if (!limited_ || remaining_ != 0 || !in_flight_.empty() || completing_ || stopped_) return;
    completing_ = true;
    set_state("terminated", "completed");
    asio::post(io_, [self = shared_from_this()] {
        if (self->src_) self->src_->close();
        if (self->dest_) self->dest_->close();
        if (!self->stopped_ && self->on_complete_) self->on_complete_();
    });
}

}  // namespace sluice::net
